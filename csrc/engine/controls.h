// Musical controls at decode time (docs/controls.md): key, range, velocity, polyphony, density,
// program-plays bonus, no parallels, cadence ending. They narrow the grammar's mask (strict rules)
// and add to a copy of the logits (soft rules) before the sampler draws, reading the notes the
// detokenizer has decoded. The settings are the C API's plain struct (sage_controls); the state
// is fixed-size, so applying, accepting and changing controls allocate nothing.
//
// What each rule sees when the next token is drawn (the REMI+ order Position Program Pitch
// Velocity Duration, csrc/engine/grammar.h):
//   Position t   allowed only if some allowed program could start a note at t (density, polyphony)
//   Program p    allowed only if p could start a note now (density, polyphony, some pitch left by
//                the key and range); bonus if p is requested and has been silent too long
//   Pitch x      after Program p: range, key (mask or penalty), parallels (mask or penalty)
//   Velocity v   after a pitch of program p: the velocity scale, then p's velocity range (the
//                nearest token if none inside)
//   Bar          masked below the bar's minimum density while a note can still be placed
//   EOS          with end = cadence, in a piece's generation only in its last bar (set_piece_bar),
//                after a note there, once every requested program has played
// A strict rule never leaves the stream without a next token: a Program is only allowed when a
// pitch can follow it; if parallels would mask every pitch left, the rule is relaxed for that
// note; after a Program the caller fed itself (a prompt), a pitch set left empty by the key and
// range falls back to the grammar's.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

#include "detokenizer.h"
#include "grammar.h"
#include "sage_edge/sage_edge.h"
#include "vocab.h"

namespace sage {

class Controls {
  public:
    // vocab must outlive the controls (it is the model's table).
    Controls(const TokenInfo* vocab, int vocab_size, int ticks_per_quarter);

    static sage_controls defaults();
    // Throws Error(Argument) naming the first field out of range.
    static void check(const sage_controls& controls);
    // Parses one control from text into `controls` (sage_controls_set); throws Error(Argument)
    // and leaves `controls` unchanged on a bad name or value.
    static void set_text(sage_controls& controls, const char* name, const char* value);
    static void usual_range(int32_t program, int32_t* low, int32_t* high);
    // The controls set_text knows (name, value syntax, help), for the C API's descriptions.
    static size_t count();
    static bool describe(size_t i, const char** name, const char** syntax, const char** help);

    void set(const sage_controls& controls);  // checks first
    const sage_controls& settings() const { return settings_; }
    void forget();  // the notes heard so far (a new piece); keeps the settings
    // Whether a piece's generation (sage_bar_stop.ends_piece) is running, and in its last bar:
    // with end = cadence, EOS waits for that bar, and entering it without a key fixes the
    // cadence's key (the one the notes heard so far are in).
    void set_piece_bar(bool in_piece, bool final_bar);
    // Whether EOS may end the piece here (end = cadence in the last bar).
    bool ending_here() const { return final_bar_ && settings_.end == SAGE_END_CADENCE; }
    bool biases() const { return biases_; }  // soft rules on: apply() writes to logits
    bool active() const { return active_; }  // any rule on

    // Narrows allowed[V] (the grammar's mask for the next token) and, when logits is not null,
    // adds the soft rules' penalties and bonuses to logits[V].
    void apply(const Grammar& grammar, const Detokenizer& detokenizer, uint8_t* allowed,
               float* logits) const;
    // After the grammar and the detokenizer have read `token`; `note` is the note it completed, or
    // null.
    void accept(int token, const Detokenizer& detokenizer, const NoteEvent* note);

  private:
    static constexpr int kVoices = SAGE_CONTROL_PROGRAMS;  // index program + 1
    static constexpr int kHeard = 1024;                    // notes kept while they may matter
    struct Heard {
        int64_t onset, end;  // ticks
        int16_t voice;
        int16_t pitch;
    };
    bool pitch_fits(int voice, int pitch, bool final_bar) const;  // range, strict key, triad
    bool can_start(int voice, int64_t time, bool density_full) const;
    int sounding(int voice, int64_t time) const;  // voice -1: every voice
    void top_lines(int64_t time, std::array<int16_t, kVoices>& lines) const;
    void mark_parallels(int voice, int64_t previous) const;
    void apply_pitches(int voice, int64_t time, uint8_t* allowed, float* logits) const;
    void apply_velocities(int voice, uint8_t* allowed, float* logits) const;
    void scale_velocities(uint8_t* allowed, float* logits) const;
    void refresh_playable();
    bool requested_have_played(const Grammar& grammar) const;  // every program asked for
    void set_cadence(int tonic, bool minor);                   // tonic -1: no cadence triad
    void set_cadence_by_ear();                                 // the key of the notes heard so far

    const TokenInfo* vocab_;
    int vocab_size_;
    int ticks_per_quarter_;
    sage_controls settings_;
    bool active_ = false, biases_ = false, polyphony_ = false;
    std::array<int16_t, 128> pitch_tokens_{};  // ids of the Pitch tokens (not PitchDrum)
    int n_pitch_tokens_ = 0;
    std::array<int16_t, 128> velocity_tokens_{};  // ids of the Velocity tokens
    int n_velocity_tokens_ = 0;
    std::array<bool, kVoices> has_program_token_{};
    // Whether a voice has a pitch the range and key leave (outside / inside a cadence's last bar).
    std::array<bool, kVoices> playable_{}, playable_final_{};
    int cadence_tonic_ = -1;  // the cadence's tonic: the key's, or found on entering the last bar
    uint32_t triad_ = 0;      // the cadence's pitch classes (0: none)
    bool in_piece_ = false, final_bar_ = false;

    // What has been heard.
    std::array<Heard, kHeard> heard_{};
    int n_heard_ = 0;
    int64_t moment_ = -1, previous_moment_ = -1;  // the last two onsets of pitched notes
    uint64_t bar_ = 0;                            // the bar notes_in_bar_ counts
    int32_t notes_in_bar_ = 0;
    std::array<uint64_t, kVoices> last_played_bar_{};
    std::array<double, 12> chroma_{};  // quarters each pitch class has sounded (the piece's key)
    static constexpr uint64_t kNoBar = ~uint64_t{0};
    uint64_t cadence_bar_ = kNoBar;  // the bar whose cadence key set_cadence_by_ear found
    // Scratch of apply_pitches: each voice's top line at the previous moment and now, and which
    // top lines now would move in parallels (mark_parallels).
    mutable std::array<int16_t, kVoices> line_before_{}, line_now_{};
    mutable std::array<bool, 128> parallel_{};
};

}  // namespace sage
