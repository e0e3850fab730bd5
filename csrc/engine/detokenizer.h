// Turns a REMI+ token stream into notes, as miditok's REMI decoder does, without miditok.
//
// Time: the first Bar (or a Position before any Bar) opens bar 0 at tick 0; every later Bar starts
// a new bar one bar length after the previous one, the length being that of the time signature
// in force (numerator * 4 * ticks_per_quarter / denominator ticks, 4/4 until a TimeSig). A TimeSig
// token sets the length of the bar it appears in. A Position sets the onset to bar start + its
// ticks. A note is Pitch (or PitchDrum), Velocity, Duration as three consecutive tokens, played
// by the last Program (0 before any); it completes at its Duration token. Tokens out of place
// are skipped like miditok skips them; special tokens (BOS, EOS, PAD, MASK, OTHER) and ids out of
// range are ignored, as sage_edge.tokenizer.Tokenizer.decode drops them.
#pragma once

#include <cstdint>

#include "vocab.h"

namespace sage {

struct NoteEvent {  // quarters from the start of the stream
    double time, duration;
    int32_t pitch, velocity, program;
};

// The bar the stream is in: how many Bar tokens opened bars so far (0 before the first), where the
// bar starts (quarters from the start of the stream) and its time signature (4/4 until a TimeSig).
struct BarInfo {
    uint64_t index;
    double start;
    int32_t numerator, denominator;
};

class Detokenizer {  // fixed-size state, no allocation
  public:
    // vocab must outlive the detokenizer (it is the model's table).
    Detokenizer(const TokenInfo* vocab, int vocab_size, int ticks_per_quarter);
    void reset();
    bool push(int token, NoteEvent* out);  // true when this token completes a note
    uint64_t bars() const { return bars_; }
    double tempo_bpm() const { return tempo_bpm_; }  // the last Tempo token's, 120 before any
    double time() const;                             // the current onset, in quarters
    BarInfo bar() const;
    // The same in ticks, for exact comparisons (the musical controls): the current onset, where
    // the bar starts, and the program of the last Program token (0 before any).
    int64_t onset_ticks() const { return onset_; }
    int64_t bar_start_ticks() const { return bar_start_; }
    int32_t program() const { return program_; }

  private:
    static constexpr double kDefaultTempo = 120.0;
    static constexpr int32_t kDefaultVelocity = 100;  // miditok's, for vocabularies without one

    const TokenInfo* vocab_;
    int vocab_size_;
    int ticks_per_quarter_;
    bool has_velocity_ = true;

    bool started_ = false;   // a bar is open (a Bar or a Position was seen)
    int64_t bar_start_ = 0;  // ticks
    int64_t bar_ticks_ = 0;
    int32_t numerator_ = 4, denominator_ = 4;  // the time signature bar_ticks_ comes from
    int64_t onset_ = 0;                        // ticks
    uint64_t bars_ = 0;
    double tempo_bpm_ = kDefaultTempo;
    int32_t program_ = 0;
    // The note being read: 0 nothing, 1 after its Pitch, 2 after its Velocity.
    int note_stage_ = 0;
    int32_t pitch_ = 0;
    int32_t velocity_ = 0;
};

}  // namespace sage
