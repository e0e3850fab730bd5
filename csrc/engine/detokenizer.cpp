#include "detokenizer.h"

namespace sage {

Detokenizer::Detokenizer(const TokenInfo* vocab, int vocab_size, int ticks_per_quarter)
    : vocab_(vocab),
      vocab_size_(vocab_size),
      ticks_per_quarter_(ticks_per_quarter > 0 ? ticks_per_quarter : 1) {
    has_velocity_ = false;
    for (int i = 0; i < vocab_size_; ++i) has_velocity_ |= vocab_[i].kind == Kind::Velocity;
    reset();
}

void Detokenizer::reset() {
    started_ = false;
    bar_start_ = 0;
    bar_ticks_ = 4 * int64_t{ticks_per_quarter_};
    numerator_ = denominator_ = 4;
    onset_ = 0;
    bars_ = 0;
    tempo_bpm_ = kDefaultTempo;
    program_ = 0;
    note_stage_ = 0;
    pitch_ = velocity_ = 0;
}

double Detokenizer::time() const {
    return static_cast<double>(onset_) / static_cast<double>(ticks_per_quarter_);
}

BarInfo Detokenizer::bar() const {
    return {bars_, static_cast<double>(bar_start_) / static_cast<double>(ticks_per_quarter_),
            numerator_, denominator_};
}

bool Detokenizer::push(int token, NoteEvent* out) {
    if (token < 0 || token >= vocab_size_) return false;
    const TokenInfo& info = vocab_[token];
    const int note_stage = note_stage_;
    note_stage_ = 0;  // a note's three tokens must be consecutive
    switch (info.kind) {
        case Kind::Bar:
            if (started_) bar_start_ += bar_ticks_;
            started_ = true;
            onset_ = bar_start_;
            ++bars_;
            return false;
        case Kind::TimeSig:
            if (info.a > 0 && info.b > 0) {
                const int64_t ticks = int64_t{info.a} * 4 * ticks_per_quarter_ / info.b;
                if (ticks > 0) {
                    bar_ticks_ = ticks;
                    numerator_ = info.a;
                    denominator_ = info.b;
                }
            }
            return false;
        case Kind::Position:
            started_ = true;
            onset_ = bar_start_ + info.a;
            return false;
        case Kind::Tempo:
            tempo_bpm_ = info.a / 1000.0;
            return false;
        case Kind::Program:
            program_ = info.a;
            return false;
        case Kind::Pitch:
        case Kind::PitchDrum:
            pitch_ = info.a;
            velocity_ = kDefaultVelocity;
            note_stage_ = has_velocity_ ? 1 : 2;
            return false;
        case Kind::Velocity:
            if (note_stage == 1) {
                velocity_ = info.a;
                note_stage_ = 2;
            }
            return false;
        case Kind::Duration:
            if (note_stage != 2) return false;
            out->time = time();
            out->duration = static_cast<double>(info.a) / ticks_per_quarter_;
            out->pitch = pitch_;
            out->velocity = velocity_;
            out->program = program_;
            return true;
        default:  // specials are transparent, as Tokenizer.decode drops them before miditok
            note_stage_ = note_stage;
            return false;
    }
}

}  // namespace sage
