// The metadata JSON of a .sage file (docs/format.md, "Metadata JSON"), read strictly: the engine
// checks the whole text is the JSON the document allows and takes from it what it needs, the
// programs the model learned. A broken text is a sage::Error (Format), never a crash: the reader
// is bounded in depth and reads nothing past `size`.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace sage {

// A General MIDI program (-1 = drums) of the training data, and how many notes it had there.
struct LearnedProgram {
    int32_t program;
    uint64_t notes;
};

// Checks `size` bytes of metadata: UTF-8, strict JSON nested at most kMaxMetadataDepth deep, an
// object with "tokenizer" and "model" objects and an optional well-formed "learned_programs".
// Returns the learned programs in ascending program order, empty when the key is absent.
// Throws sage::Error (Format) naming what is wrong.
std::vector<LearnedProgram> read_metadata(const uint8_t* text, size_t size);

constexpr int kMaxMetadataDepth = 32;                    // nested arrays and objects
constexpr uint64_t kMaxLearnedNotes = (1ull << 53) - 1;  // exact in every JSON reader

}  // namespace sage
