// sage_edge._engine: a thin pybind11 layer over the C++ engine. Python-facing names and errors
// only; all logic lives in csrc/.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels.h"
#include "sage_edge/sage_edge.h"

namespace py = pybind11;
namespace k = sage::kernels;

namespace {

// The active kernel table, or RuntimeError with the dispatch message (e.g. a bad
// SAGE_EDGE_KERNEL).
const k::KernelTable& active_kernels() {
    const k::KernelTable* t = k::try_active();
    if (t == nullptr) throw std::runtime_error(k::select_error());
    return *t;
}

std::vector<std::string> available_kernels() {
    const k::KernelTable* t[16];
    const int n = k::available(t, 16);
    std::vector<std::string> names;
    for (int i = 0; i < n; ++i) names.emplace_back(t[i]->name);
    return names;
}

py::bytes quantize_row_q8_0(py::array_t<float, py::array::c_style | py::array::forcecast> x,
                            py::object kernel) {
    if (x.ndim() != 1) throw std::invalid_argument("quantize_row_q8_0: x must be 1-D");
    const k::KernelTable* t = &active_kernels();
    if (!kernel.is_none()) {
        const std::string name = py::cast<std::string>(kernel);
        t = k::find(name.c_str());
        if (t == nullptr) throw std::invalid_argument("unknown or unavailable kernel: " + name);
    }
    const int64_t n = x.shape(0);
    std::string out(static_cast<size_t>(k::blocks_per_row(n)) * sizeof(k::BlockQ8_0), '\0');
    {
        py::gil_scoped_release release;
        t->quantize_row_q8_0(x.data(), reinterpret_cast<k::BlockQ8_0*>(out.data()), n);
    }
    return py::bytes(out);
}

}  // namespace

// ---- The engine: models and sessions, through the C API (csrc/include/sage_edge/sage_edge.h) ----
//
// The module is a front end like sage-edge-run: every call goes through the C API, so Python gets
// the same argument checks and messages. A failed call raises the exception matching its status:
// sage_edge.ModelFormatError for a missing or broken file, ValueError for a bad argument,
// MemoryError when an allocation at creation fails, RuntimeError otherwise (a SAGE_EDGE_KERNEL this
// CPU cannot run, a state error such as feeding nothing to a new session, an internal error).
// Every call that computes releases the GIL.
namespace engine {

// Raises the Python exception for a failed C API call (the GIL is held).
[[noreturn]] void raise_status(sage_status status) {
    const std::string message = sage_last_error();
    switch (status) {
        case SAGE_ERR_IO:
        case SAGE_ERR_FORMAT:
            // Looked up when raised: a namespace-level py::object would be released after the
            // interpreter has finalized.
            PyErr_SetString(py::module_::import("sage_edge.errors").attr("ModelFormatError").ptr(),
                            message.c_str());
            break;
        case SAGE_ERR_ARGUMENT:
            PyErr_SetString(PyExc_ValueError, message.c_str());
            break;
        case SAGE_ERR_MEMORY:
            PyErr_SetString(PyExc_MemoryError, message.c_str());
            break;
        default:
            PyErr_SetString(PyExc_RuntimeError, message.c_str());
            break;
    }
    throw py::error_already_set();
}

void check(sage_status status) {
    if (status != SAGE_OK) raise_status(status);
}

// Runs a C API call with the GIL released; the error, if any, is raised with the GIL back.
template <typename Call>
void unlocked(Call&& call) {
    sage_status status;
    {
        py::gil_scoped_release release;
        status = call();
    }
    check(status);
}

// The name Python sees for why sage_session_generate_bars returned.
const char* stop_reason_name(sage_stop_reason reason) {
    switch (reason) {
        case SAGE_STOP_BARS:
            return "bars";
        case SAGE_STOP_TIME:
            return "time";
        case SAGE_STOP_END:
            return "end";
        case SAGE_STOP_MAX_TOKENS:
            return "max_tokens";
        case SAGE_STOP_BAR_LINE:
            return "bar_line";
        default:
            return "capacity";
    }
}

using ModelHandle = std::shared_ptr<sage_model>;

py::dict memory_dict(const sage_memory& r) {
    py::dict d;
    d["weights_bytes"] = r.weights_bytes;
    d["activation_bytes"] = r.activation_bytes;
    d["kv_bytes"] = r.kv_bytes;
    d["total_bytes"] = r.total_bytes;
    return d;
}

class PyModel {
  public:
    explicit PyModel(const std::string& path) {
        sage_model* model = nullptr;
        unlocked([&] { return sage_model_load(path.c_str(), &model); });
        model_ = ModelHandle(model, sage_model_free);
    }

    py::dict info() const {
        sage_model_info i;
        check(sage_model_get_info(model_.get(), &i));
        std::vector<uint32_t> horizons(i.n_layers);
        check(sage_model_get_horizons(model_.get(), horizons.data(), horizons.size()));
        py::dict d;
        d["vocab_size"] = i.vocab_size;
        d["n_layers"] = i.n_layers;
        d["d_model"] = i.d_model;
        d["n_heads"] = i.n_heads;
        d["n_kv_heads"] = i.n_kv_heads;
        d["d_head"] = i.d_head;
        d["d_ff"] = i.d_ff;
        d["n_families"] = i.n_families;
        d["attention"] = sage_attention_name(i.attention);
        d["quantization"] = sage_quant_name(i.quant);
        d["ticks_per_quarter"] = i.ticks_per_quarter;
        d["norm_eps"] = i.norm_eps;
        d["parameters"] = i.parameters;
        d["file_bytes"] = i.file_bytes;
        d["horizons"] = horizons;
        d["budget"] = i.budget;
        return d;
    }

    // The vocabulary table the file carries (docs/format.md): family, kind, a and b of every id.
    py::dict vocabulary() const {
        sage_model_info i;
        check(sage_model_get_info(model_.get(), &i));
        const size_t V = i.vocab_size;
        py::array_t<uint8_t> family(V), kind(V);
        py::array_t<int32_t> a(V), b(V);
        for (size_t id = 0; id < V; ++id) {
            uint32_t f, k;
            check(sage_model_get_token(model_.get(), static_cast<int32_t>(id), &f, &k,
                                       a.mutable_data() + id, b.mutable_data() + id));
            family.mutable_at(id) = static_cast<uint8_t>(f);
            kind.mutable_at(id) = static_cast<uint8_t>(k);
        }
        py::dict d;
        d["family"] = family;
        d["kind"] = kind;
        d["a"] = a;
        d["b"] = b;
        return d;
    }

    std::string metadata_json() const {
        const char* json = nullptr;
        size_t size = 0;
        check(sage_model_get_metadata(model_.get(), &json, &size));
        return std::string(json, size);
    }

    // {program: notes} of the training data, or None when the file does not record them.
    py::object learned_programs() const {
        int32_t programs[SAGE_MAX_LEARNED_PROGRAMS];
        uint64_t notes[SAGE_MAX_LEARNED_PROGRAMS];
        size_t count = 0;
        check(sage_model_get_learned_programs(model_.get(), programs, notes,
                                              SAGE_MAX_LEARNED_PROGRAMS, &count));
        if (count == 0) return py::none();
        py::dict d;
        for (size_t i = 0; i < count; ++i) d[py::int_(programs[i])] = notes[i];
        return d;
    }

    // A session's memory report, without creating one.
    py::dict session_memory(const std::string& kv_memory) const {
        sage_session_options options = sage_session_options_default();
        check(sage_kv_memory_parse(kv_memory.c_str(), &options.kv_memory));
        sage_memory r;
        check(sage_model_get_session_memory(model_.get(), &options, &r));
        return memory_dict(r);
    }

    const ModelHandle& handle() const { return model_; }

  private:
    ModelHandle model_;
};

sage_sampling sampling_of(float temperature, int32_t top_k, float top_p, float min_p) {
    return sage_sampling{temperature, top_k, top_p, min_p};
}

sage_live_options live_options(int64_t start_us, uint32_t us_per_quarter, int32_t bar_quarters,
                               const std::vector<int32_t>& channel_programs, bool follow_clock) {
    sage_live_options o = sage_live_options_default();
    o.start_us = start_us;
    o.follow_clock = follow_clock ? 1 : 0;
    o.us_per_quarter = us_per_quarter;
    o.bar_quarters = bar_quarters;
    if (!channel_programs.empty()) {
        if (channel_programs.size() != 16) {
            PyErr_SetString(PyExc_ValueError, "channel_programs: 16 programs, one per channel");
            throw py::error_already_set();
        }
        for (int c = 0; c < 16; ++c) o.channel_programs[c] = channel_programs[c];
    }
    return o;
}

// The live encoder (sage_live_*): its own, or a view of a jam's. Its calls are short and hold the
// GIL, so Python threads sharing one never run its calls at once.
class PyLive {
  public:
    PyLive(const PyModel& model, int64_t start_us, uint32_t us_per_quarter, int32_t bar_quarters,
           const std::vector<int32_t>& channel_programs, bool follow_clock) {
        const sage_live_options o =
            live_options(start_us, us_per_quarter, bar_quarters, channel_programs, follow_clock);
        sage_live* live = nullptr;
        check(sage_live_create(model.handle().get(), &o, &live));
        owner_ = std::shared_ptr<void>(live,
                                       [](void* p) { sage_live_free(static_cast<sage_live*>(p)); });
        keep_model_ = model.handle();
        live_ = live;
        ticks_per_quarter_ = model_ticks(model.handle().get());
    }
    // A view of the encoder of a jam that `owner` keeps alive.
    PyLive(std::shared_ptr<void> owner, sage_live* live, const sage_model* model)
        : owner_(std::move(owner)), live_(live), ticks_per_quarter_(model_ticks(model)) {}
    static int model_ticks(const sage_model* model) {
        sage_model_info info{};
        check(sage_model_get_info(model, &info));
        return static_cast<int>(info.ticks_per_quarter);
    }
    void note(int64_t t, int32_t channel, int32_t pitch, int32_t velocity) {
        check(sage_live_note(live_, t, channel, pitch, velocity));
    }
    void program(int32_t channel, int32_t program) {
        check(sage_live_program(live_, channel, program));
    }
    void tempo(int64_t t, uint32_t us_per_quarter) {
        check(sage_live_tempo(live_, t, us_per_quarter));
    }
    void set_meter(uint64_t bar, int32_t quarters) {
        check(sage_live_set_meter(live_, bar, quarters));
    }
    uint64_t meter(int64_t t, int32_t quarters) {
        uint64_t bar = 0;
        check(sage_live_meter(live_, t, quarters, &bar));
        return bar;
    }
    py::tuple bar(uint64_t bar) const {
        int64_t start = 0;
        int32_t quarters = 0;
        check(sage_live_get_bar(live_, bar, &start, &quarters));
        return py::make_tuple(start, quarters);
    }
    void midi(int64_t t, const py::bytes& data) {
        const std::string bytes = data;
        check(
            sage_live_midi(live_, t, reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
    }
    // A bar holds at most Bar, TimeSig, a Position and a Tempo per tick, 5 tokens per note.
    static constexpr size_t kMaxBarTokens = 2 + 2 * 12 * 96 + 5 * 512;
    std::vector<int32_t> take_bar(int64_t now_us, bool force) {
        std::vector<int32_t> tokens(kMaxBarTokens);
        size_t count = 0;
        check(
            sage_live_take_bar(live_, now_us, force ? 1 : 0, tokens.data(), tokens.size(), &count));
        tokens.resize(count);
        return tokens;
    }
    std::vector<int32_t> take_final(int64_t now_us) {
        std::vector<int32_t> tokens(kMaxBarTokens);
        size_t count = 0;
        check(sage_live_take_final(live_, now_us, tokens.data(), tokens.size(), &count));
        tokens.resize(count);
        return tokens;
    }
    int64_t time_of(int64_t tick) const {
        int64_t t = 0;
        check(sage_live_time_of(live_, tick, &t));
        return t;
    }
    int64_t tick_at(int64_t t) const {
        int64_t tick = 0;
        check(sage_live_tick_at(live_, t, &tick));
        return tick;
    }
    py::dict counts() const {
        sage_live_counts c{};
        check(sage_live_get_counts(live_, &c));
        py::dict d;
        d["bars_taken"] = c.bars_taken;
        d["notes"] = c.notes;
        d["late"] = c.late;
        d["dropped"] = c.dropped;
        d["sounding"] = c.sounding;
        d["waiting"] = c.waiting;
        d["clock_tick"] = c.clock_tick;
        d["clock_start_tick"] = c.clock_start_tick;
        d["clock_from_tick"] = c.clock_from_tick;
        d["clock_stops"] = c.clock_stops;
        d["clock_running"] = c.clock_running;
        d["notes_while_stopped"] = c.notes_while_stopped;
        return d;
    }
    void reset() { check(sage_live_reset(live_)); }
    int ticks_per_quarter() const { return ticks_per_quarter_; }

  private:
    ModelHandle keep_model_;       // the encoder reads the model's vocabulary: keep it alive
    std::shared_ptr<void> owner_;  // frees the encoder, or keeps its jam alive
    sage_live* live_ = nullptr;
    int ticks_per_quarter_ = 0;
};

using JamKeep = std::shared_ptr<std::pair<ModelHandle, std::shared_ptr<sage_jam>>>;

// The notes a polling call (sage_jam_poll, sage_jam_player_poll) gives, called again while it
// fills its buffer, as sage_edge.live.JamNote takes them.
template <typename Poll>
std::vector<py::tuple> jam_notes(Poll&& poll) {
    std::vector<py::tuple> out;
    sage_jam_note notes[64];
    size_t count = 0;
    do {
        check(poll(notes, 64, &count));
        for (size_t i = 0; i < count; ++i) {
            const sage_jam_note& n = notes[i];
            out.push_back(py::make_tuple(n.time_us, n.end_us, n.pitch, n.velocity, n.program,
                                         n.channel, n.tick, n.end_tick));
        }
    } while (count == 64);
    return out;
}

// A jam (sage_jam_*): poll holds the GIL, like the calls on its encoder, so the two never overlap.
class PyJam {
  public:
    PyJam(const PyModel& model, int32_t mode, uint32_t phrase_bars, double rest_quarters,
          std::optional<uint32_t> lookahead_bars, std::optional<uint32_t> listen_ticks,
          bool predict, std::optional<bool> react, const std::vector<int32_t>& programs,
          py::tuple sampling, uint64_t seed, int64_t start_us, uint32_t us_per_quarter,
          int32_t bar_quarters, const std::vector<int32_t>& channel_programs, bool follow_clock)
        : model_(model.handle()) {
        sage_jam_options o = sage_jam_options_default();
        o.mode = mode;
        o.phrase_bars = phrase_bars;
        o.rest_quarters = rest_quarters;
        // None: the C API's default (sage_jam_options_default: in time, every beat, reacting).
        if (lookahead_bars) o.lookahead_bars = *lookahead_bars;
        if (listen_ticks) o.listen_ticks = *listen_ticks;
        o.predict = predict ? 1 : 0;
        if (react) o.react = *react ? 1 : 0;
        if (programs.size() > 16) {
            PyErr_SetString(PyExc_ValueError, "the engine plays at most 16 programs");
            throw py::error_already_set();
        }
        for (size_t i = 0; i < programs.size(); ++i) o.programs[i] = programs[i];
        o.n_programs = static_cast<uint32_t>(programs.size());
        o.sampling = sampling_of(sampling[0].cast<float>(), sampling[1].cast<int32_t>(),
                                 sampling[2].cast<float>(), sampling[3].cast<float>());
        o.seed = seed;
        o.live =
            live_options(start_us, us_per_quarter, bar_quarters, channel_programs, follow_clock);
        sage_jam* jam = nullptr;
        check(sage_jam_create(model_.get(), &o, &jam));
        jam_ = std::shared_ptr<sage_jam>(jam, sage_jam_free);
    }
    PyLive live() {
        sage_live* live = nullptr;
        check(sage_jam_get_live(jam_.get(), &live));
        return PyLive(std::shared_ptr<void>(keep()), live, model_.get());  // keeps the jam alive
    }
    // The jam and its model, for a view that must keep them alive.
    JamKeep keep() const { return std::make_shared<JamKeep::element_type>(model_, jam_); }
    std::vector<py::tuple> poll(int64_t now_us) {
        return jam_notes([&](sage_jam_note* notes, size_t capacity, size_t* count) {
            return sage_jam_poll(jam_.get(), now_us, notes, capacity, count);
        });
    }
    void set_controls(const sage_controls& controls) {
        check(sage_jam_set_controls(jam_.get(), &controls));
    }
    std::vector<int32_t> history() const {
        std::vector<int32_t> tokens(8192);
        size_t count = 0;
        check(sage_jam_get_history(jam_.get(), tokens.data(), tokens.size(), &count));
        tokens.resize(count);
        return tokens;
    }
    py::dict state() const {
        sage_jam_state st{};
        check(sage_jam_get_state(jam_.get(), &st));
        py::dict d;
        d["answering"] = st.answering != 0;
        d["generating"] = st.generating != 0;
        d["answers"] = st.answers;
        d["tokens"] = st.tokens;
        d["dropped_notes"] = st.dropped_notes;
        d["replays"] = st.replays;
        d["replayed_tokens"] = st.replayed_tokens;
        return d;
    }
    py::dict options() const {
        sage_jam_options o{};
        check(sage_jam_get_options(jam_.get(), &o));
        py::dict d;
        d["lookahead"] = o.lookahead_bars;
        d["listen_ticks"] = o.listen_ticks;
        d["react"] = o.react == 1;
        d["predict"] = o.predict == 1;
        return d;
    }

  private:
    ModelHandle model_;
    std::shared_ptr<sage_jam> jam_;
};

// The messages a byte-writing call of the jam player writes, one a call (a named port takes one
// message a send), called again while it writes one.
template <typename Call>
py::list messages_of(Call&& call) {
    py::list out;
    uint8_t bytes[SAGE_MIDI_MAX_MESSAGE_BYTES];
    size_t n = 0;
    while (true) {
        check(call(bytes, sizeof bytes, &n));
        if (n == 0) return out;
        out.append(py::bytes(reinterpret_cast<const char*>(bytes), n));
    }
}

// A jam's notes played (sage_jam_player_*): its calls are short and hold the GIL, like the jam's.
class PyJamPlayer {
  public:
    PyJamPlayer(const PyJam& jam, bool lead_clock) : keep_(jam.keep()) {
        sage_jam_player* p = nullptr;
        check(sage_jam_player_create(keep_->second.get(), lead_clock ? 1 : 0, &p));
        player_ = std::shared_ptr<sage_jam_player>(p, sage_jam_player_free);
    }
    std::vector<py::tuple> poll(int64_t now_us) {
        return jam_notes([&](sage_jam_note* notes, size_t capacity, size_t* count) {
            return sage_jam_player_poll(player_.get(), now_us, notes, capacity, count);
        });
    }
    py::list take_due(int64_t now_us) {
        return messages_of([&](uint8_t* b, size_t c, size_t* n) {
            return sage_jam_player_take_due(player_.get(), now_us, b, c, n);
        });
    }
    void input_ended(int64_t now_us) { check(sage_jam_player_input_ended(player_.get(), now_us)); }
    int64_t wait(int64_t now_us) const {
        int64_t us = 0;
        check(sage_jam_player_wait(player_.get(), now_us, &us));
        return us;
    }
    py::list stop() {
        return messages_of([&](uint8_t* b, size_t c, size_t* n) {
            return sage_jam_player_stop(player_.get(), b, c, n);
        });
    }
    py::dict state() const {
        sage_jam_player_state st{};
        check(sage_jam_player_get_state(player_.get(), &st));
        py::dict d;
        d["notes"] = st.notes;
        d["dropped"] = st.dropped;
        d["late_sends"] = st.late_sends;
        d["worst_late_us"] = st.worst_late_us;
        d["pulses"] = st.pulses;
        d["queued"] = st.queued;
        d["closing"] = st.closing != 0;
        d["done"] = st.done != 0;
        return d;
    }

  private:
    JamKeep keep_;  // the jam (and its model) outlive the player
    std::shared_ptr<sage_jam_player> player_;
};

// A session is not thread-safe (sage_edge.h: the caller serialises calls on one session), but
// Python code may share one between threads, and the calls that compute release the GIL. So every
// call takes the session's mutex, waiting for it with the GIL released: calls on one session from
// several threads run one after another, never at once. No call takes the GIL while holding the
// mutex without already holding the GIL, so the two locks cannot deadlock.
class PySession {
  public:
    PySession(const PyModel& model, uint64_t seed, const std::string& kv_memory)
        : model_(model.handle()) {
        sage_session_options options = sage_session_options_default();
        options.seed = seed;
        check(sage_kv_memory_parse(kv_memory.c_str(), &options.kv_memory));
        sage_session* session = nullptr;
        unlocked([&] { return sage_session_create(model_.get(), &options, &session); });
        session_.reset(session);
        check(sage_model_get_info(model_.get(), &info_));
    }

    py::array_t<float> feed(py::array_t<int32_t, py::array::c_style | py::array::forcecast> tokens,
                            bool all_logits) {
        if (tokens.ndim() != 1) {
            PyErr_SetString(PyExc_ValueError, "tokens must be a 1-D sequence of ids");
            throw py::error_already_set();
        }
        const size_t n = static_cast<size_t>(tokens.shape(0));
        const py::ssize_t V = info_.vocab_size;
        py::array_t<float> logits = all_logits
                                        ? py::array_t<float>({static_cast<py::ssize_t>(n), V})
                                        : py::array_t<float>(V);
        float* out = logits.mutable_data();
        const int32_t* ids = tokens.data();
        locked_call([&] { return sage_session_feed(get(), ids, n, out, all_logits ? 1 : 0); });
        return logits;
    }

    int32_t sample(const sage_sampling& sampling) {
        int32_t token = -1;
        locked_call([&] { return sage_session_sample(get(), &sampling, &token); });
        return token;
    }

    py::array_t<int32_t> generate(uint64_t n, const sage_sampling& sampling) {
        py::array_t<int32_t> tokens(static_cast<py::ssize_t>(n));
        int32_t* out = tokens.mutable_data();
        locked_call([&] { return sage_session_generate(get(), &sampling, out, n); });
        return tokens;
    }

    // sage_session_generate_bars: at most `capacity` tokens, continuing the generation `stop`
    // holds the progress of; returns (tokens, reason name).
    py::tuple generate_bars(sage_bar_stop& stop, const sage_sampling& sampling, size_t capacity) {
        std::vector<int32_t> buffer(capacity);
        size_t count = 0;
        sage_stop_reason reason = SAGE_STOP_CAPACITY;
        locked_call([&] {
            return sage_session_generate_bars(get(), &sampling, &stop, buffer.data(), capacity,
                                              &count, &reason);
        });
        py::array_t<int32_t> tokens(static_cast<py::ssize_t>(count));
        std::copy_n(buffer.data(), count, tokens.mutable_data());
        return py::make_tuple(tokens, stop_reason_name(reason));
    }

    void set_programs(const std::vector<int32_t>& programs) {
        locked_call(
            [&] { return sage_session_set_programs(get(), programs.data(), programs.size()); });
    }

    void reset() {
        locked_call([&] { return sage_session_reset(get()); });
    }

    void set_controls(const sage_controls& controls) {
        locked_call([&] { return sage_session_set_controls(get(), &controls); });
    }

    sage_controls controls() {
        sage_controls out;
        locked_call([&] { return sage_session_get_controls(get(), &out); });
        return out;
    }

    uint64_t position() {
        uint64_t position = 0;
        locked_call([&] { return sage_session_get_position(get(), &position); });
        return position;
    }

    // The bar the stream is in: (index, start in quarters, numerator, denominator).
    py::tuple bar() {
        sage_bar b;
        locked_call([&] { return sage_session_get_bar(get(), &b); });
        return py::make_tuple(b.index, b.start, b.numerator, b.denominator);
    }

    double tempo() {
        double bpm = 0;
        locked_call([&] { return sage_session_get_tempo(get(), &bpm); });
        return bpm;
    }

    uint64_t dropped_events() {
        uint64_t dropped = 0;
        locked_call([&] { return sage_session_get_dropped_events(get(), &dropped); });
        return dropped;
    }

    // Completed notes as (time, duration, pitch, velocity, program) tuples, oldest first.
    py::list pop_events() {
        py::list out;
        sage_note_event batch[256];
        for (;;) {
            size_t n = 0;
            locked_call([&] { return sage_session_pop_events(get(), batch, 256, &n); });
            for (size_t i = 0; i < n; ++i)
                out.append(py::make_tuple(batch[i].time, batch[i].duration, batch[i].pitch,
                                          batch[i].velocity, batch[i].program));
            if (n < 256) return out;
        }
    }

    // The grammar mask for the next token, [V] bool.
    static_assert(sizeof(bool) == 1, "numpy bool arrays are one byte per element");
    py::array_t<bool> allowed_next() {
        py::array_t<bool> mask(info_.vocab_size);
        uint8_t* out = reinterpret_cast<uint8_t*>(mask.mutable_data());
        locked_call([&] { return sage_session_allowed_next(get(), out, info_.vocab_size); });
        return mask;
    }

    py::dict memory() {
        sage_memory r;
        locked_call([&] { return sage_session_get_memory(get(), &r); });
        return memory_dict(r);
    }

  private:
    sage_session* get() const { return session_.get(); }

    // Runs a C API call on this session with the GIL released and the session's mutex held.
    template <typename Call>
    void locked_call(Call&& call) {
        sage_status status;
        {
            py::gil_scoped_release release;
            std::lock_guard<std::mutex> lock(mutex_);
            status = call();
        }
        check(status);
    }

    struct Free {
        void operator()(sage_session* s) const { sage_session_free(s); }
    };
    ModelHandle model_;  // the model outlives the session (sage_edge.h)
    std::unique_ptr<sage_session, Free> session_;
    sage_model_info info_{};
    std::mutex mutex_;
};

// The per-program arrays of sage_controls, read by program (-1 = drums).
int controls_voice(int32_t program) {
    if (program < -1 || program > 127)
        throw py::value_error("program " + std::to_string(program) + " outside -1..127");
    return program + 1;
}

py::list controls_described() {
    py::list out;
    for (size_t i = 0; i < sage_controls_count(); ++i) {
        const char *name, *syntax, *help;
        check(sage_controls_describe(i, &name, &syntax, &help));
        out.append(py::make_tuple(name, syntax, help));
    }
    return out;
}

void bind_controls(py::module_& m) {
    py::class_<sage_controls>(m, "Controls",
                              "Musical controls (sage_controls): every rule off until set().")
        .def(py::init([] { return sage_controls_default(); }))
        .def(
            "set",
            [](sage_controls& c, const std::string& name, const std::string& value) {
                check(sage_controls_set(&c, name.c_str(), value.c_str()));
            },
            py::arg("name"), py::arg("value"), "One control from text, as the CLI flags give it.")
        .def("check", [](const sage_controls& c) { check(sage_controls_check(&c)); })
        .def_readonly("key_mode", &sage_controls::key_mode)
        .def_readonly("key_tonic", &sage_controls::key_tonic)
        .def_readonly("key_classes", &sage_controls::key_classes)
        .def_readonly("key_penalty", &sage_controls::key_penalty)
        .def_readonly("velocity_scale", &sage_controls::velocity_scale)
        .def_readonly("max_polyphony_total", &sage_controls::max_polyphony_total)
        .def_readonly("density_min", &sage_controls::density_min)
        .def_readonly("density_max", &sage_controls::density_max)
        .def_readonly("plays_after_bars", &sage_controls::plays_after_bars)
        .def_readonly("plays_bonus", &sage_controls::plays_bonus)
        .def_readonly("parallels_mode", &sage_controls::parallels_mode)
        .def_readonly("parallels_penalty", &sage_controls::parallels_penalty)
        .def_readonly("end", &sage_controls::end)
        .def(
            "pitch_range",
            [](const sage_controls& c, int32_t program) {
                const int v = controls_voice(program);
                return py::make_tuple(c.pitch_low[v], c.pitch_high[v]);
            },
            py::arg("program"))
        .def(
            "velocity_range",
            [](const sage_controls& c, int32_t program) {
                const int v = controls_voice(program);
                return py::make_tuple(c.velocity_low[v], c.velocity_high[v]);
            },
            py::arg("program"))
        .def(
            "max_polyphony",
            [](const sage_controls& c, int32_t program) {
                return c.max_polyphony[controls_voice(program)];
            },
            py::arg("program"));
    m.def("controls_described", &controls_described,
          "(name, value syntax, help) of every control, in the C API's order.");
    m.def(
        "usual_range",
        [](int32_t program) {
            int32_t low = 0, high = 0;
            check(sage_controls_usual_range(program, &low, &high));
            return py::make_tuple(low, high);
        },
        py::arg("program"), "The usual sounding range of a General MIDI program.");
}

void bind(py::module_& m) {
    py::module_::import("sage_edge.errors");  // fail at import, not at the first error
    bind_controls(m);
    // The C API's default session memory, the one default every caller names (sage_edge.Engine,
    // the CLI, the runner).
    const char* default_kv_memory = sage_kv_memory_name(sage_session_options_default().kv_memory);

    py::class_<PyModel>(m, "Model", "A validated, memory-mapped .sage model file.")
        .def(py::init<const std::string&>(), py::arg("path"))
        .def("info", &PyModel::info, "Hyperparameters, quantization, horizons and sizes.")
        .def("metadata_json", &PyModel::metadata_json,
             "The file's metadata JSON (validated at load): tokenizer configuration and more.")
        .def("vocabulary", &PyModel::vocabulary,
             "The file's vocabulary table: {'family', 'kind', 'a', 'b'} arrays indexed by id.")
        .def("session_memory", &PyModel::session_memory, py::arg("kv_memory") = default_kv_memory,
             "What one session holds, in bytes (weights, activations, kv, total).")
        .def("learned_programs", &PyModel::learned_programs,
             "{program: notes in the training data}, or None when the file does not say.");

    py::class_<sage_bar_stop>(m, "BarStop",
                              "What Session.generate_bars generates, and its progress "
                              "(sage_bar_stop in sage_edge.h).")
        .def(py::init([](uint64_t bars, int32_t meter_quarters, int32_t meter_bars, bool each_bar,
                         bool ends_piece) {
                 sage_bar_stop stop{};
                 stop.bars = bars;
                 stop.meter_quarters = meter_quarters;
                 stop.meter_bars = meter_bars;
                 stop.each_bar = each_bar ? 1 : 0;
                 stop.ends_piece = ends_piece ? 1 : 0;
                 return stop;
             }),
             py::arg("bars"), py::arg("meter_quarters") = 0, py::arg("meter_bars") = 0,
             py::arg("each_bar") = false, py::arg("ends_piece") = false)
        .def_readonly("bars", &sage_bar_stop::bars)
        .def_readonly("opened", &sage_bar_stop::opened)
        .def_readonly("generated", &sage_bar_stop::generated)
        .def_readonly("end", &sage_bar_stop::end);
    m.attr("MAX_TOKENS_PER_BAR") = SAGE_MAX_TOKENS_PER_BAR;
    m.attr("DEFAULT_KV_MEMORY") = default_kv_memory;
    m.attr("JAM_LATE_US") = SAGE_JAM_LATE_US;

    const sage_sampling d = sage_sampling_default();
    py::class_<PyLive>(m, "Live",
                       "The live encoder: timed MIDI events in, the model's tokens bar by bar.")
        .def(py::init<const PyModel&, int64_t, uint32_t, int32_t, const std::vector<int32_t>&,
                      bool>(),
             py::arg("model"), py::arg("start_us") = 0, py::arg("us_per_quarter") = 500000,
             py::arg("bar_quarters") = 4, py::arg("channel_programs") = std::vector<int32_t>{},
             py::arg("follow_clock") = false)
        .def("note", &PyLive::note, py::arg("time_us"), py::arg("channel"), py::arg("pitch"),
             py::arg("velocity"))
        .def("program", &PyLive::program, py::arg("channel"), py::arg("program"))
        .def("tempo", &PyLive::tempo, py::arg("time_us"), py::arg("us_per_quarter"))
        .def("midi", &PyLive::midi, py::arg("time_us"), py::arg("data"))
        .def("set_meter", &PyLive::set_meter, py::arg("bar"), py::arg("quarters"))
        .def("meter", &PyLive::meter, py::arg("time_us"), py::arg("quarters"))
        .def("bar", &PyLive::bar, py::arg("bar"), "(start tick, quarters) of a bar of the table.")
        .def("take_bar", &PyLive::take_bar, py::arg("now_us"), py::arg("force") = false)
        .def("take_final", &PyLive::take_final, py::arg("now_us"))
        .def("time_of", &PyLive::time_of, py::arg("tick"))
        .def("tick_at", &PyLive::tick_at, py::arg("time_us"))
        .def("counts", &PyLive::counts)
        .def("reset", &PyLive::reset)
        .def_property_readonly("ticks_per_quarter", &PyLive::ticks_per_quarter);
    py::class_<PyJam>(m, "Jam", "A session that listens through a live encoder and plays.")
        .def(py::init<const PyModel&, int32_t, uint32_t, double, std::optional<uint32_t>,
                      std::optional<uint32_t>, bool, std::optional<bool>,
                      const std::vector<int32_t>&, py::tuple, uint64_t, int64_t, uint32_t, int32_t,
                      const std::vector<int32_t>&, bool>(),
             py::arg("model"), py::arg("mode"), py::arg("phrase_bars"), py::arg("rest_quarters"),
             py::arg("lookahead_bars"), py::arg("listen_ticks"), py::arg("predict"),
             py::arg("react"), py::arg("programs"), py::arg("sampling"), py::arg("seed"),
             py::arg("start_us"), py::arg("us_per_quarter"), py::arg("bar_quarters"),
             py::arg("channel_programs"), py::arg("follow_clock") = false)
        .def("live", &PyJam::live, "The jam's live encoder: give it the musician's events.")
        .def("options", &PyJam::options,
             "lookahead, listen_ticks, react, predict as the jam plays (defaults resolved).")
        .def("poll", &PyJam::poll, py::arg("now_us"),
             "Feeds the bars complete at now_us, generates a little; the engine's new notes as "
             "(time_us, end_us, pitch, velocity, program, channel).")
        .def("state", &PyJam::state)
        .def("set_controls", &PyJam::set_controls, py::arg("controls"))
        .def("history", &PyJam::history, "The last 8192 tokens of the stream, oldest first.");
    py::class_<PyJamPlayer>(m, "JamPlayer",
                            "A jam's notes (and a clock led) as MIDI bytes on time "
                            "(sage_jam_player_*).")
        .def(py::init<const PyJam&, bool>(), py::arg("jam"), py::arg("lead_clock") = false)
        .def("poll", &PyJamPlayer::poll, py::arg("now_us"),
             "Polls the jam and queues its notes; the notes queued, as Jam.poll gives them.")
        .def("take_due", &PyJamPlayer::take_due, py::arg("now_us"),
             "The messages due at now_us (a clock's pulses among them), each as bytes.")
        .def("input_ended", &PyJamPlayer::input_ended, py::arg("now_us"))
        .def("wait", &PyJamPlayer::wait, py::arg("now_us"),
             "Microseconds to wait for input before calling again.")
        .def("stop", &PyJamPlayer::stop, "The end: note-offs, and Stop when leading a clock.")
        .def("state", &PyJamPlayer::state);
    py::class_<PySession>(m, "Session", "A generation session: ring memories, sampler, grammar.")
        .def(py::init<const PyModel&, uint64_t, const std::string&>(), py::arg("model"),
             py::arg("seed") = 0, py::arg("kv_memory") = default_kv_memory)
        .def("feed", &PySession::feed, py::arg("tokens"), py::arg("all_logits") = false,
             "Run the model over tokens; logits [V] after the last one or [n, V] after each.")
        .def(
            "sample",
            [](PySession& s, float t, int32_t k, float p, float min_p) {
                return s.sample(sampling_of(t, k, p, min_p));
            },
            py::arg("temperature") = d.temperature, py::arg("top_k") = d.top_k,
            py::arg("top_p") = d.top_p, py::arg("min_p") = d.min_p,
            "Draw the next token under the grammar mask (not fed).")
        .def(
            "generate",
            [](PySession& s, uint64_t n, float t, int32_t k, float p, float min_p) {
                return s.generate(n, sampling_of(t, k, p, min_p));
            },
            py::arg("n_tokens"), py::arg("temperature") = d.temperature, py::arg("top_k") = d.top_k,
            py::arg("top_p") = d.top_p, py::arg("min_p") = d.min_p,
            "Sample and feed n tokens; returns them.")
        .def(
            "generate_bars",
            [](PySession& s, sage_bar_stop& stop, size_t capacity, float t, int32_t k, float p,
               float min_p) {
                return s.generate_bars(stop, sampling_of(t, k, p, min_p), capacity);
            },
            py::arg("stop"), py::arg("capacity"), py::arg("temperature") = d.temperature,
            py::arg("top_k") = d.top_k, py::arg("top_p") = d.top_p, py::arg("min_p") = d.min_p,
            "Generate up to capacity tokens of the bars `stop` asks for (updating its progress); "
            "returns (tokens, why it stopped: 'bars', 'time', 'end', 'max_tokens', 'bar_line' or "
            "'capacity').")
        .def("reset", &PySession::reset)
        .def("set_programs", &PySession::set_programs, py::arg("programs"))
        .def("set_controls", &PySession::set_controls, py::arg("controls"))
        .def("controls", &PySession::controls)
        .def("pop_events", &PySession::pop_events)
        .def("memory", &PySession::memory)
        .def("allowed_next", &PySession::allowed_next)
        .def_property_readonly("position", &PySession::position)
        .def_property_readonly("bar", &PySession::bar)
        .def_property_readonly("tempo", &PySession::tempo)
        .def_property_readonly("dropped_events", &PySession::dropped_events);

    // The checks every front end applies before it starts work (sage_edge.h).
    m.def(
        "check_sampling",
        [](float t, int32_t k, float p, float min_p) {
            const sage_sampling s = sampling_of(t, k, p, min_p);
            check(sage_sampling_check(&s));
        },
        py::arg("temperature"), py::arg("top_k"), py::arg("top_p"), py::arg("min_p"));
    m.def("check_tempo", [](double bpm) { check(sage_tempo_check(bpm)); }, py::arg("bpm"));
}

}  // namespace engine

PYBIND11_MODULE(_engine, m) {
    m.doc() = "sage-edge C++ engine (kernels, sessions)";

    m.def("version", &sage_version, "The engine's version: the package's (pyproject.toml).");
    m.def("cpu_features", &sage_cpu_features,
          "CPU features relevant to kernel dispatch, e.g. 'avx avx2 fma avx512f ...'.");
    m.def(
        "kernel", [] { return std::string(active_kernels().name); },
        "Name of the active kernel path; RuntimeError if SAGE_EDGE_KERNEL names an invalid one.");
    m.def("available_kernels", &available_kernels,
          "Kernel paths this CPU can run, scalar first and best last.");
    m.def("quantize_row_q8_0", &quantize_row_q8_0, py::arg("x"), py::arg("kernel") = py::none(),
          "Quantize a 1-D float32 array to Q8_0 and return the raw blocks (36 bytes each: f32 "
          "scale, 32 x int8), with the active kernel path or the one named.");
    m.attr("BLOCK_SIZE") = k::kBlockSize;
    // Facts defined once in C++ that the Python package asks for.
    const sage_sampling sampling = sage_sampling_default();
    py::dict default_sampling;
    default_sampling["temperature"] = sampling.temperature;
    default_sampling["top_k"] = sampling.top_k;
    default_sampling["top_p"] = sampling.top_p;
    default_sampling["min_p"] = sampling.min_p;
    m.attr("DEFAULT_SAMPLING") = default_sampling;
    m.attr("TEMPO_RANGE_BPM") = py::make_tuple(SAGE_TEMPO_MIN_BPM, SAGE_TEMPO_MAX_BPM);

    // The token kinds and attribute families of sage_edge.h (tests/test_vocab.py checks that
    // sage_edge/vocab.py says the same).
    py::dict kinds, families;
    kinds["PAD"] = int{SAGE_KIND_PAD};
    kinds["BOS"] = int{SAGE_KIND_BOS};
    kinds["EOS"] = int{SAGE_KIND_EOS};
    kinds["MASK"] = int{SAGE_KIND_MASK};
    kinds["BAR"] = int{SAGE_KIND_BAR};
    kinds["TIMESIG"] = int{SAGE_KIND_TIMESIG};
    kinds["POSITION"] = int{SAGE_KIND_POSITION};
    kinds["TEMPO"] = int{SAGE_KIND_TEMPO};
    kinds["PROGRAM"] = int{SAGE_KIND_PROGRAM};
    kinds["PITCH"] = int{SAGE_KIND_PITCH};
    kinds["PITCH_DRUM"] = int{SAGE_KIND_PITCH_DRUM};
    kinds["VELOCITY"] = int{SAGE_KIND_VELOCITY};
    kinds["DURATION"] = int{SAGE_KIND_DURATION};
    kinds["OTHER"] = int{SAGE_KIND_OTHER};
    families["SPECIAL"] = int{SAGE_FAMILY_SPECIAL};
    families["TIME"] = int{SAGE_FAMILY_TIME};
    families["PROGRAM"] = int{SAGE_FAMILY_PROGRAM};
    families["PITCH"] = int{SAGE_FAMILY_PITCH};
    families["VELOCITY"] = int{SAGE_FAMILY_VELOCITY};
    families["DURATION"] = int{SAGE_FAMILY_DURATION};
    m.attr("KINDS") = kinds;
    m.attr("FAMILIES") = families;

    engine::bind(m);  // Model, Session
}
