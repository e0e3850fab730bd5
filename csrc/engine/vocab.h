// The vocabulary table of a model file (docs/format.md, "Vocabulary"): what each token id means,
// enough to check grammar and turn a token stream into notes without the Python tokenizer.
#pragma once

#include <cstdint>

namespace sage {

enum class Family : uint8_t {
    Special = 0,
    Time = 1,
    Program = 2,
    Pitch = 3,
    Velocity = 4,
    Duration = 5
};
constexpr int kNumFamilies = 6;

enum class Kind : uint8_t {
    Pad = 0,
    Bos = 1,
    Eos = 2,
    Mask = 3,
    Bar = 4,
    TimeSig = 5,   // a = numerator, b = denominator
    Position = 6,  // a = onset within the bar in ticks
    Tempo = 7,     // a = beats per minute x 1000
    Program = 8,   // a = General MIDI program, -1 = drums
    Pitch = 9,     // a = MIDI pitch
    PitchDrum = 10,
    Velocity = 11,  // a = MIDI velocity
    Duration = 12,  // a = length in ticks
    Other = 13,
};
constexpr int kNumKinds = 14;

struct TokenInfo {
    Family family;
    Kind kind;
    int32_t a;
    int32_t b;
};

// The family each kind belongs to (docs/format.md); the loader rejects a table that disagrees.
inline Family family_of_kind(Kind kind) {
    switch (kind) {
        case Kind::Bar:
        case Kind::TimeSig:
        case Kind::Position:
        case Kind::Tempo:
            return Family::Time;
        case Kind::Program:
            return Family::Program;
        case Kind::Pitch:
        case Kind::PitchDrum:
            return Family::Pitch;
        case Kind::Velocity:
            return Family::Velocity;
        case Kind::Duration:
            return Family::Duration;
        default:
            return Family::Special;
    }
}

}  // namespace sage
