#include "grammar.h"

#include <algorithm>
#include <cstdint>

namespace sage {

namespace {

// num * 4 * tpq / den ticks, computed in 64 bits; 4/4 for a malformed signature or a bar longer
// than 32 bits hold (the loader bounds tpq, but a Grammar may be built with any int).
int32_t bar_length(int32_t numerator, int32_t denominator, int ticks_per_quarter) {
    const int64_t four_four = std::min<int64_t>(int64_t{4} * ticks_per_quarter, INT32_MAX);
    if (numerator <= 0 || denominator <= 0) return static_cast<int32_t>(four_four);
    // Three positive factors below 2^31, 2^3 and 2^31: the product fits 64 unsigned bits.
    const uint64_t ticks =
        uint64_t(numerator) * 4 * uint64_t(std::max(ticks_per_quarter, 1)) / uint64_t(denominator);
    return static_cast<int32_t>(ticks > 0 && ticks <= INT32_MAX ? int64_t(ticks) : four_four);
}

}  // namespace

Grammar::Grammar(const TokenInfo* vocab, int vocab_size, int ticks_per_quarter)
    : vocab_(vocab), vocab_size_(vocab_size), ticks_per_quarter_(ticks_per_quarter) {
    for (int i = 0; i < vocab_size_; ++i) {
        const int kind = static_cast<int>(vocab_[i].kind);
        if (kind < kNumKinds) has_kind_[kind] = true;
    }
    set_allowed_programs(nullptr, 0);
    reset();
}

void Grammar::reset() {
    after_ = After::Start;
    bar_ticks_ = bar_length(4, 4, ticks_per_quarter_);
    last_position_ = -1;
    floor_ = 0;
    program_ = 0;
}

void Grammar::set_allowed_programs(const int32_t* programs, size_t n) {
    program_allowed_.fill(n == 0);
    restricts_programs_ = n > 0;
    for (size_t i = 0; i < n; ++i) {
        if (programs[i] >= -1 && programs[i] <= 127) program_allowed_[programs[i] + 1] = true;
    }
}

bool Grammar::any_program_allowed() const {
    for (int i = 0; i < vocab_size_; ++i) {
        if (vocab_[i].kind == Kind::Program && program_allowed(vocab_[i].a)) return true;
    }
    return false;
}

bool Grammar::program_allowed(int32_t program) const {
    return program >= -1 && program <= 127 && program_allowed_[program + 1];
}

bool Grammar::position_allowed(int32_t ticks) const {
    return ticks > last_position_ && ticks >= floor_ && ticks >= 0 && ticks < bar_ticks_;
}

bool Grammar::may_follow(const TokenInfo& token) const {
    switch (token.kind) {
        case Kind::Bos:
            return after_ == After::Start || after_ == After::Eos;
        case Kind::Eos:
            return allow_eos_ && after_ == After::Duration;
        case Kind::Bar:
            switch (after_) {
                case After::Start:
                case After::Bos:
                case After::Eos:
                case After::TimeSig:
                case After::Tempo:
                case After::Duration:
                    return true;
                case After::Bar:
                    return !has_kind_[static_cast<int>(Kind::TimeSig)];
                default:
                    return false;
            }
        case Kind::TimeSig:
            return after_ == After::Bar &&
                   (meter_numerator_ == 0 ||
                    (token.a == meter_numerator_ && token.b == meter_denominator_));
        case Kind::Position:
            switch (after_) {
                case After::Bar:
                    return !has_kind_[static_cast<int>(Kind::TimeSig)] && position_allowed(token.a);
                case After::TimeSig:
                case After::Tempo:
                case After::Duration:
                    return position_allowed(token.a);
                default:
                    return false;
            }
        case Kind::Tempo:
            return after_ == After::Position;
        case Kind::Program:
            return (after_ == After::Position || after_ == After::Tempo ||
                    after_ == After::Duration) &&
                   (floor_ == 0 || last_position_ >= floor_) && program_allowed(token.a);
        case Kind::Pitch:
            return after_ == After::Program &&
                   (program_ != -1 || !has_kind_[static_cast<int>(Kind::PitchDrum)]);
        case Kind::PitchDrum:
            return after_ == After::Program && program_ == -1;
        case Kind::Velocity:
            return after_ == After::Pitch;
        case Kind::Duration:
            return after_ == After::Velocity ||
                   (after_ == After::Pitch && !has_kind_[static_cast<int>(Kind::Velocity)]);
        default:  // PAD, MASK, OTHER
            return false;
    }
}

void Grammar::allowed(uint8_t* mask) const {
    // Only a TimeSig's, a Position's and a Program's values count: every other kind is asked once
    // (-1: ask each token).
    std::array<int8_t, kNumKinds> of_kind;
    for (int k = 0; k < kNumKinds; ++k) {
        const Kind kind = static_cast<Kind>(k);
        of_kind[k] = kind == Kind::TimeSig || kind == Kind::Position || kind == Kind::Program
                         ? -1
                         : may_follow(TokenInfo{Family{}, kind, 0, 0});
    }
    bool any = false;
    for (int i = 0; i < vocab_size_; ++i) {
        const int8_t known = of_kind[static_cast<int>(vocab_[i].kind)];
        mask[i] = known >= 0 ? static_cast<uint8_t>(known) : may_follow(vocab_[i]) ? 1 : 0;
        any = any || mask[i];
    }
    // Never a dead end (a program list that matches no Program token could cause one): a Bar,
    // or failing that any non-special token, keeps the stream going.
    if (!any) {
        for (int i = 0; i < vocab_size_; ++i) {
            mask[i] = vocab_[i].kind == Kind::Bar ? 1 : 0;
            any = any || mask[i];
        }
    }
    if (!any) {
        for (int i = 0; i < vocab_size_; ++i) mask[i] = vocab_[i].family != Family::Special;
    }
}

void Grammar::accept(int token) {
    if (token < 0 || token >= vocab_size_) return;
    const TokenInfo& info = vocab_[token];
    switch (info.kind) {
        case Kind::Bos:
            reset();
            after_ = After::Bos;
            break;
        case Kind::Eos:
            reset();
            after_ = After::Eos;
            break;
        case Kind::Bar:
            after_ = After::Bar;
            last_position_ = -1;
            floor_ = 0;
            break;
        case Kind::TimeSig:
            after_ = After::TimeSig;
            bar_ticks_ = bar_length(info.a, info.b, ticks_per_quarter_);
            break;
        case Kind::Position:
            after_ = After::Position;
            last_position_ = info.a;
            break;
        case Kind::Tempo:
            after_ = After::Tempo;
            break;
        case Kind::Program:
            after_ = After::Program;
            program_ = info.a;
            break;
        case Kind::Pitch:
        case Kind::PitchDrum:
            after_ = After::Pitch;
            break;
        case Kind::Velocity:
            after_ = After::Velocity;
            break;
        case Kind::Duration:
            after_ = After::Duration;
            break;
        default:  // PAD, MASK, OTHER: no meaning in the stream
            break;
    }
}

}  // namespace sage
