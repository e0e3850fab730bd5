// A generation session: the forward pass of docs/design.md over a model's mapped weights, the
// per-layer DSMR ring memories, and the sampler, grammar and detokenizer around it.
//
// Everything a session uses is allocated by its constructor; feed, sample, generate and
// pop_events allocate nothing, and a decode step costs O(sum of horizons) however long the
// session has run.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "../kernels/kernels.h"
#include "controls.h"
#include "detokenizer.h"
#include "grammar.h"
#include "model_file.h"
#include "sampler.h"

namespace sage {

// How the ring memories hold keys and values (the values of sage_kv_memory): f32, or int8 with
// one f32 scale per key/value head and position (about a quarter of the bytes; the attention
// reads them with attend_group_q8).
enum class KvMemory : uint32_t { F32 = 0, Int8 = 1 };

// The defaults of every front end (sage_session_options_default): the int8 memory, whose quality
// matches the f32 one's within the weights' gate for 3.6x less memory (docs/results.md).
struct SessionOptions {
    uint64_t seed = 0;
    KvMemory kv_memory = KvMemory::Int8;
};

// What Session::generate_bars generates: `bars` notated bars, counted at each TimeSig (at each Bar
// in a vocabulary without TimeSig). A token bar whose TimeSig is meter_quarters/4 counts as
// meter_bars notated bars when meter_bars >= 1 (3/4 after a 3/8 prompt: {3, 2}); any other as one.
// The progress fields start at zero and carry a generation across calls.
struct BarStop {
    uint64_t bars = 1;
    int32_t meter_quarters = 0, meter_bars = 0;
    bool each_bar = false;    // also return before each new token bar (StopReason::BarLine)
    bool ends_piece = false;  // the last bar asked ends the piece (end = cadence acts there)
    uint64_t opened = 0;      // notated bars opened so far
    uint64_t generated = 0;   // tokens generated so far
    double end = 0;           // quarters: where notated bar `bars` ends, once it is open
};

// Why generate_bars returned (the values of sage_stop_reason).
enum class StopReason : int32_t {
    Bars = 0,       // the next token (pending) is the Bar after the last bar asked
    Time = 1,       // the next token (pending) is a Position at or past `end`
    End = 2,        // EOS was generated (and fed): the piece ended
    MaxTokens = 3,  // kMaxTokensPerBar * (bars + 1) tokens without finishing
    BarLine = 4,    // each_bar: a token bar is complete; the Bar opening the next one is pending
    Capacity = 5,   // the call's `capacity` tokens are generated; call again to go on
};

struct MemoryReport {
    uint64_t weights_bytes;     // the mapped file
    uint64_t activation_bytes;  // forward-pass scratch, logits, grammar mask, sampler scratch
    uint64_t kv_bytes;          // the ring memories: sum_l h_l * G * 2 * (d_h * 4), or with
                                // int8 memory sum_l h_l * G * 2 * (d_h + 4) (the keys'
                                // d_h and the values' h_l rounded up to multiples of 4)
    uint64_t total_bytes;       // activations + kv + sampler, grammar, detokenizer, event queue
};

// One layer's DSMR memory: the keys and values of its last `horizon` positions, G·d_h numbers
// each. Position p lives in slot p mod horizon, so writing position p overwrites p − horizon,
// the first position the window (p − horizon, p] no longer contains. Keys are stored transposed,
// element by element ([G·d_h][horizon]), so the attention kernel reads the keys of consecutive
// slots as one vector; values are stored slot by slot ([horizon][G·d_h]). An int8 memory keeps
// its keys as quads of elements (kernels.h, key_quads: a key/value head's key_quads(d_h) quads
// after another's) and its values as quads of slots (value_q8_index) for the integer dot
// products, and one scale per head and slot ([G][horizon]); the f32 vectors are then empty, and
// the other way round.
struct RingMemory {
    int64_t horizon = 0;
    int64_t heads = 0, d_head = 0;           // G, d_h
    int64_t width = 0;                       // G·d_h
    std::vector<float> keys, values;         // f32: [width][horizon], [horizon][width]
    std::vector<int8_t> keys_q8, values_q8;  // int8: [G][quads][horizon][4], [horizon/4][width][4]
    std::vector<float> key_scales, value_scales;  // int8: [G][horizon]

    bool is_int8() const { return !keys_q8.empty(); }
    void allocate(int64_t horizon, int64_t heads, int64_t d_head, KvMemory kind);
    // Bytes of one layer's memory of `horizon` slots (what allocate asks for).
    static uint64_t bytes(int64_t horizon, int64_t heads, int64_t d_head, KvMemory kind);

    // Copies key/value head `group` of positions first .. first + count - 1 of `ring` (a memory
    // of the same kind holding them) into slots 0 .. count - 1 of this one-head memory, which must
    // have count slots or more.
    void copy_from(const RingMemory& ring, int64_t group, uint64_t first, int64_t count);
    // The other way: slots slot .. slot + count - 1 of this one-head memory into key/value head
    // `group` of positions first .. first + count - 1 of `ring` (count <= ring.horizon).
    void copy_into(RingMemory& ring, int64_t group, int64_t slot, uint64_t first,
                   int64_t count) const;

    // Writes position's key and value (width floats each); an int8 memory quantizes each head's
    // row with the kernel table's quantize_row_int8.
    void write(uint64_t position, const float* key, const float* value,
               const kernels::KernelTable& table) {
        const int64_t slot = static_cast<int64_t>(position % horizon);
        if (!is_int8()) {
            for (int64_t e = 0; e < width; ++e) keys[e * horizon + slot] = key[e];
            std::copy(value, value + width, &values[slot * width]);
            return;
        }
        // Locals and whole quads: a byte store may alias any member, so the compiler would reload
        // them after each one.
        const int64_t H = horizon, n = d_head, quads = kernels::key_quads(d_head);
        int8_t row[kernels::kMaxHeadWidth];
        for (int64_t c = n; c < 4 * quads; ++c) row[c] = 0;  // the last quad's padding
        for (int64_t g = 0; g < heads; ++g) {
            const int64_t first = g * n;
            key_scales[g * H + slot] = table.quantize_row_int8(key + first, n, row);
            int8_t* key_bytes = group_keys_q8(g) + kernels::key_q8_index(0, slot, H);
            for (int64_t i = 0; i < quads; ++i) std::memcpy(key_bytes + i * H * 4, row + 4 * i, 4);
            value_scales[g * H + slot] = table.quantize_row_int8(value + first, n, row);
            int8_t* value_bytes = &values_q8[kernels::value_q8_index(first, slot, width)];
            for (int64_t c = 0; c < n; ++c) value_bytes[4 * c] = row[c];  // 4 bytes apart
        }
    }
    // Key/value head g's keys in an int8 memory (kernels::AttentionGroup::keys_q8).
    int8_t* group_keys_q8(int64_t g) {
        return keys_q8.data() + g * kernels::key_quads(d_head) * horizon * 4;
    }
    const int8_t* group_keys_q8(int64_t g) const {
        return keys_q8.data() + g * kernels::key_quads(d_head) * horizon * 4;
    }
};

// Scratch of the forward pass, allocated once. A prefill block runs each layer over up to
// kPrefillChunk tokens at once, so the per-token buffers hold one row per token of the block.
struct RunState {
    std::vector<float> x;                       // [chunk][d]: residual stream per token
    std::vector<float> u;                       // [chunk][d] normed residual streams
    std::vector<kernels::BlockQ8_0> quantized;  // [chunk][widest input] the next products' input
    std::vector<kernels::BlockQ8_0> gathered;   // [chunk][d] the inputs of one family's tokens
    std::vector<float> q;                       // [chunk][H·d_h] queries
    std::vector<float> k, v;                    // [chunk][G·d_h] new keys and values
    std::vector<int32_t> kv_row;                // [chunk] token t's row in k and v
    std::vector<float> scores;                  // attention weights of a group (its queries')
    std::vector<uint8_t> weights;               // an int8 memory's quantized attention weights
    std::vector<float> attended;                // [chunk][H·d_h] attention output, all heads
    std::vector<float> gate, up;                // [chunk][d_ff] SwiGLU halves
    std::vector<float> delta;                   // [chunk][d] output of W_o or W_2, added to x
    std::vector<float> logits;                  // [V] after the last fed token
    std::vector<uint8_t> allowed;               // [V] grammar mask
    std::vector<float> biased;                  // [V] logits with the soft controls' biases

    // Element counts of the buffers above, from the model alone: the session allocates them and
    // reports them, so a session's memory is known before it exists.
    struct Sizes {
        int64_t stream;     // x, u, delta
        int64_t quantized;  // quantized
        int64_t gathered;   // gathered
        int64_t queries;    // q, attended
        int64_t keys;       // k, v
        int64_t tokens;     // kv_row
        int64_t scores;     // scores
        int64_t weights;    // weights (bytes)
        int64_t window;     // slots of Session's block window (one head): max h_l - 1 + chunk
        int64_t hidden;     // gate, up
        int64_t vocab;      // logits, allowed, biased
    };
    static Sizes sizes(const Model& model);
    static uint64_t bytes(const Sizes& sizes);
};

class Session;

// A copy of what a session has heard, to go back to (Session::save, Session::restore): the ring
// memories, the position, the last logits, the grammar, detokenizer and controls' state. The
// sampler's generator is not in it: draws after a restore are fresh ones. The jam's anticipation
// returns to a bar line to replay the bar once the musician's part of it is known (docs/jam.md).
// Sized by Session::make_snapshot (the ring memories' bytes, the controls' 30 KB, the logits);
// saving and restoring copy into it and allocate nothing.
class SessionSnapshot {
  private:
    friend class Session;
    SessionSnapshot(const Session& session);
    std::vector<RingMemory> memory_;
    std::vector<float> logits_;
    Grammar grammar_;
    Detokenizer detokenizer_;
    Controls controls_;
    uint64_t position_ = 0;
    bool has_logits_ = false;
    int32_t pending_ = -1;
};

class Session {
  public:
    // Tokens fed through each layer together (the prefill block): the layer's weights stay in
    // cache while it runs over the whole block.
    static constexpr int kPrefillChunk = 64;
    // Completed notes kept for pop_events before the oldest are dropped.
    static constexpr size_t kEventCapacity = 4096;

    // `model` must outlive the session. Throws sage::Error (Memory) or std::bad_alloc.
    Session(const Model& model, const SessionOptions& options, const kernels::KernelTable& kernels);

    // Forget every token: position 0, empty memory, grammar and events reset, seed restarted.
    void reset();
    // Programs generated notes may use (-1 = drums); n = 0 allows all. Throws Error(Argument).
    void set_programs(const int32_t* programs, size_t n);
    // The one time signature generated bars may take (numerator 0: any). Throws Error(Argument)
    // when the vocabulary has no such TimeSig.
    void set_meter(int32_t numerator, int32_t denominator);

    // Runs the model over n tokens (checked first: a bad id changes nothing). If `logits` is not
    // null it receives the logits after the last token ([V]) or, with all_logits, after every
    // token ([n][V]). Feeding no tokens changes nothing and returns the last logits again; on a
    // session that has been fed nothing there are none, and it throws Error(State).
    void feed(const int32_t* tokens, size_t n, float* logits, bool all_logits);
    // Draws the next token from the last logits under the grammar mask; does not feed it. The
    // token drawn stays pending until something is fed (or reset/set_programs): sampling again
    // returns it, whatever the parameters, so the stream does not depend on how often a caller
    // looks at the next token. A session that has been fed nothing (new or reset) starts a new
    // piece: BOS is fed first.
    int32_t sample(const SamplingParams& params);
    // Samples and feeds n tokens; `tokens` (may be null) receives them.
    void generate(const SamplingParams& params, int32_t* tokens, size_t n);
    // A model that never closes a bar is stopped after kMaxTokensPerBar * (bars + 1) tokens.
    static constexpr uint64_t kMaxTokensPerBar = 2048;
    // Samples and feeds tokens until stop.bars notated bars are complete (the BarStop comment),
    // at most `capacity` into tokens[]; returns how many and sets *reason. Each sampled token is
    // checked before it is fed: a Bar that would open a bar past the ones asked, or a Position
    // at or past stop.end inside a token bar spanning several notated bars, stops the loop and
    // stays pending, so calling again (a bar or a few tokens at a time) continues with exactly
    // the tokens of one long call. EOS (where the grammar allows it) is fed, then stops.
    // Throws Error(Argument) for a bad stop (check_bar_stop) or sampling.
    size_t generate_bars(const SamplingParams& params, BarStop& stop, int32_t* tokens,
                         size_t capacity, StopReason* reason);
    // A snapshot of this session's state as it is now (allocates; do it once, outside a hot path).
    std::unique_ptr<SessionSnapshot> make_snapshot() const;
    // Copies the state into `snapshot` (one made by this session); allocates nothing.
    void save(SessionSnapshot& snapshot) const;
    // Goes back to the state saved: what was fed or generated since is forgotten, the note events
    // not yet popped are dropped. The settings stay as they are now: programs, meter, EOS switch
    // and the musical controls' settings (their record of the notes heard goes back). Allocates
    // nothing.
    void restore(const SessionSnapshot& snapshot);
    // Until the next Bar, no note may start before `ticks` of the current bar: a Position must be
    // at or past it and no note may be added at an earlier position (the grammar's floor).
    void set_position_floor(int32_t ticks) {
        grammar_.set_position_floor(ticks);
        pending_ = -1;
    }

    // The grammar's EOS switch: off by default (an endless stream of music).
    void set_allow_eos(bool allow) {
        allow_eos_ = allow;
        grammar_.set_allow_eos(allow_eos_ || controls_.ending_here());
    }
    // Musical controls (controls.h) from the next token on; a token already drawn is drawn again.
    // Throws Error(Argument) for a bad setting (Controls::check), changing nothing.
    void set_controls(const sage_controls& controls);
    const sage_controls& controls() const { return controls_.settings(); }

    // Writes the mask for the next token into allowed[V] (1 = may follow): the grammar's,
    // narrowed by the musical controls.
    void allowed_next(uint8_t* allowed) const;

    uint64_t position() const { return position_; }
    uint64_t bars() const { return detokenizer_.bars(); }
    double tempo_bpm() const { return detokenizer_.tempo_bpm(); }
    BarInfo bar() const { return detokenizer_.bar(); }
    size_t pop_events(NoteEvent* out, size_t capacity);
    uint64_t dropped_events() const { return dropped_events_; }
    // What a session of `model` holds, known without creating one (every buffer's size is a
    // function of the model, RunState::sizes).
    static MemoryReport planned_memory(const Model& model, const SessionOptions& options);
    MemoryReport memory() const { return planned_memory(model_, options_); }
    // Throws Error(Argument) for a kv_memory that is not a KvMemory.
    static void check_options(const SessionOptions& options);
    const Model& model() const { return model_; }
    const kernels::KernelTable& kernels() const { return kernels_; }

    // Throws Error(Argument) unless temperature >= 0, top_k >= 0, top_p in (0, 1], min_p in [0, 1).
    static void check_sampling(const SamplingParams& params);
    // Throws Error(Argument) unless bars is in 1..UINT32_MAX, meter_bars >= 0 (with
    // meter_quarters >= 1 when > 0), opened <= bars and end is finite and >= 0.
    static void check_bar_stop(const BarStop& stop);

  private:
    friend class SessionSnapshot;
    // The transformer, a block of tokens at a time (docs/design.md, "The network"): every token
    // gets exactly the arithmetic it would get alone, so a prefill equals token-by-token feeding.
    void embed(int32_t token, float* x);
    void forward_layer(int layer, const int32_t* tokens, int64_t count, uint64_t position);
    void project_keys_values(int layer, const int32_t* tokens, int64_t count);
    // The query at `position` (its key and value already in the ring) -> out[H·d_h].
    void attend(int layer, uint64_t position, const float* q, float* out);
    // The block's `count` queries (state_.q) at positions position, position + 1, ... against
    // the layer's memory and their own keys (state_.k, state_.v) -> state_.attended; then their
    // keys and values go into the ring.
    void attend_block(int layer, int64_t count, uint64_t position);
    // The memory fields of an AttentionGroup for key/value head g of `memory`.
    kernels::AttentionGroup group_memory(const RingMemory& memory, int g);
    void output_logits(const float* x, float* logits);

    // y[t] = W x[t] over rows [first_row, first_row + rows) of W for `count` inputs x[t] of
    // W.cols values each, y[t] at y + t * y_stride. The x rows are read as f32 for f32 weights;
    // otherwise `prepare` has quantized them into xq (blocks_per_row(W.cols) blocks per row).
    void prepare(const float* x, int64_t n, int64_t count, kernels::BlockQ8_0* xq);
    void matmul(const Matrix& w, int64_t first_row, int64_t rows, const float* x,
                const kernels::BlockQ8_0* xq, int64_t count, float* y, int64_t y_stride);
    // out[t] = rmsnorm(x[t]) * gain for `count` rows of d_model values.
    void rmsnorm(const float* x, const float* gain, float* out, int64_t count) const;
    void accept(int32_t token);  // grammar + detokenizer + event queue
    void start_piece();          // feeds BOS to a session that has been fed nothing
    // The grammar's mask narrowed by the controls into allowed[V]; when a soft control biases the
    // logits and `biased` is not null, biased[V] receives them.
    void mask_next(uint8_t* allowed, float* biased) const;

    const Model& model_;
    const Config& config_;
    const kernels::KernelTable& kernels_;
    SessionOptions options_;
    RunState state_;
    std::vector<RingMemory> memory_;  // one per layer
    // A prefill block's window in one layer, one key/value head at a time: the h_l - 1 positions
    // before the block, copied from the ring, then the block's own, in slots that do not wrap, so
    // that every query of the block attends from it at once (the ring holds only h_l positions:
    // the block's newest keys would overwrite keys its first queries see).
    RingMemory window_;
    Sampler sampler_;
    Grammar grammar_;
    Detokenizer detokenizer_;
    Controls controls_;
    bool allow_eos_ = false;
    std::array<int32_t, 129> programs_{};  // the allowed programs (kept to undo a bad list)
    size_t programs_count_ = 0;
    std::vector<NoteEvent> events_;  // ring queue of kEventCapacity
    size_t events_head_ = 0, events_count_ = 0;
    uint64_t dropped_events_ = 0;
    uint64_t position_ = 0;
    bool has_logits_ = false;
    int32_t pending_ = -1;    // the token sample() drew and nothing has fed yet, -1 if none
    int32_t bos_token_ = -1;  // the vocabulary's first BOS, -1 if it has none
    bool has_time_signatures_ = false;  // the vocabulary has TimeSig tokens
};

}  // namespace sage
