// The REMI+ grammar mask: which tokens may come next so that the stream stays decodable.
//
// The grammar is the one miditok REMI writes with programs in one stream, tempos and time
// signatures (docs/data.md):
//
//   BOS? ( Bar TimeSig ( Position Tempo? ( Program Pitch Velocity Duration )* )* )*
//
// In detail, after each token the mask allows:
//   (start)           BOS, Bar
//   BOS               Bar
//   Bar               TimeSig (Position, Bar if the vocabulary has no TimeSig)
//   TimeSig           Position, Bar
//   Position          Tempo, Program
//   Tempo             Program, Position, Bar
//   Program           Pitch (PitchDrum after Program -1, when the vocabulary has it)
//   Pitch, PitchDrum  Velocity
//   Velocity          Duration
//   Duration          Program, Position, Bar (and EOS once set_allow_eos(true))
//   EOS               BOS, Bar (a new piece)
// with these value constraints: a Position lies after the previous Position of the same bar and
// before the end of the bar (numerator * 4 * ticks_per_quarter / denominator ticks of the current
// time signature, 4/4 until one is seen); a Program is one of the allowed programs. PAD, MASK and
// OTHER are never allowed; set_meter limits TimeSig to one signature. EOS is off by default:
// generation is an endless stream.
//
// accept() takes any token, in or out of grammar (a prompt may come from anywhere): the state
// follows the token's kind, so the mask resynchronises at once. PAD, MASK, OTHER and ids out of
// range leave the state unchanged.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

#include "vocab.h"

namespace sage {

class Grammar {  // the REMI+ grammar mask; fixed-size state
  public:
    // vocab must outlive the grammar (it is the model's table).
    Grammar(const TokenInfo* vocab, int vocab_size, int ticks_per_quarter);
    void reset();
    // Programs new notes may use (-1 = drums); n == 0 allows every program. Values outside
    // -1..127 are ignored.
    void set_allowed_programs(const int32_t* programs, size_t n);
    // True when at least one allowed program has a Program token in the vocabulary (otherwise no
    // note can be generated: a caller should reject such a program list).
    bool any_program_allowed() const;
    bool program_allowed(int32_t program) const;
    bool restricts_programs() const { return restricts_programs_; }  // a program list was given
    void set_allow_eos(bool allow) { allow_eos_ = allow; }
    // The only time signature new bars may take (numerator 0: any), so that generated bars keep
    // the length of bars played live.
    void set_meter(int32_t numerator, int32_t denominator) {
        meter_numerator_ = numerator;
        meter_denominator_ = denominator;
    }
    // Until the next Bar, Positions before `ticks` and notes at a position before it are not
    // allowed (a jam that has replayed the start of a bar decides only what comes after).
    void set_position_floor(int32_t ticks) { floor_ = ticks; }
    void allowed(uint8_t* mask) const;
    // Takes the place in the stream `other` is at (what accept() tracks), keeping this grammar's
    // settings (programs, meter, EOS switch).
    void copy_state(const Grammar& other) {
        after_ = other.after_;
        bar_ticks_ = other.bar_ticks_;
        last_position_ = other.last_position_;
        floor_ = other.floor_;
        program_ = other.program_;
    }  // mask[V]: which tokens may come next
    void accept(int token);  // advance state (tolerant of prompt tokens)

    // The length of the current bar in ticks (from the last TimeSig, 4/4 before any).
    int bar_ticks() const { return bar_ticks_; }

  private:
    enum class After : uint8_t {
        Start,
        Bos,
        Eos,
        Bar,
        TimeSig,
        Position,
        Tempo,
        Program,
        Pitch,
        Velocity,
        Duration,
    };
    bool may_follow(const TokenInfo& token) const;
    bool position_allowed(int32_t ticks) const;

    const TokenInfo* vocab_;
    int vocab_size_;
    int ticks_per_quarter_;
    std::array<bool, kNumKinds> has_kind_{};
    std::array<bool, 129> program_allowed_{};  // index program + 1 (-1 = drums)
    bool allow_eos_ = false;
    bool restricts_programs_ = false;
    int32_t meter_numerator_ = 0, meter_denominator_ = 0;

    After after_ = After::Start;
    int32_t bar_ticks_ = 0;
    int32_t last_position_ = -1;  // ticks; -1 = no Position yet in this bar
    int32_t floor_ = 0;           // ticks: set_position_floor, until the next Bar
    int32_t program_ = 0;
};

}  // namespace sage
