// The C API (csrc/include/sage_edge/sage_edge.h) over sage::Model and sage::Session. Every entry
// point catches every exception: a sage::Error becomes its status, std::bad_alloc becomes
// SAGE_ERR_MEMORY, and the message is kept for sage_last_error() on the calling thread.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <new>
#include <string>

#include "jam.h"
#include "jam_player.h"
#include "kernels.h"
#include "live_encoder.h"
#include "midi_scheduler.h"
#include "model_file.h"
#include "sage_edge/sage_edge.h"
#include "session.h"

struct sage_model {
    std::unique_ptr<sage::Model> model;
};

struct sage_session {
    std::unique_ptr<sage::Session> session;
};

struct sage_live {
    std::unique_ptr<sage::LiveEncoder> owned;  // empty for a jam's encoder
    sage::LiveEncoder* encoder = nullptr;
};

struct sage_midi_scheduler {
    sage::MidiScheduler scheduler;
};

struct sage_jam {
    std::unique_ptr<sage::Jam> jam;
    sage_jam_options options;  // as given
    sage_live live;            // a view of the jam's encoder
};

struct sage_jam_player {
    sage::JamPlayer player;
};

namespace {

// The C enums restate csrc/engine/vocab.h for C callers; they must not drift apart.
#define SAGE_SAME(c, cpp) static_assert(static_cast<int>(c) == static_cast<int>(cpp), #c)
SAGE_SAME(SAGE_KIND_PAD, sage::Kind::Pad);
SAGE_SAME(SAGE_KIND_BOS, sage::Kind::Bos);
SAGE_SAME(SAGE_KIND_EOS, sage::Kind::Eos);
SAGE_SAME(SAGE_KIND_MASK, sage::Kind::Mask);
SAGE_SAME(SAGE_KIND_BAR, sage::Kind::Bar);
SAGE_SAME(SAGE_KIND_TIMESIG, sage::Kind::TimeSig);
SAGE_SAME(SAGE_KIND_POSITION, sage::Kind::Position);
SAGE_SAME(SAGE_KIND_TEMPO, sage::Kind::Tempo);
SAGE_SAME(SAGE_KIND_PROGRAM, sage::Kind::Program);
SAGE_SAME(SAGE_KIND_PITCH, sage::Kind::Pitch);
SAGE_SAME(SAGE_KIND_PITCH_DRUM, sage::Kind::PitchDrum);
SAGE_SAME(SAGE_KIND_VELOCITY, sage::Kind::Velocity);
SAGE_SAME(SAGE_KIND_DURATION, sage::Kind::Duration);
SAGE_SAME(SAGE_KIND_OTHER, sage::Kind::Other);
static_assert(SAGE_KIND_OTHER + 1 == sage::kNumKinds, "a kind is missing from sage_kind");
SAGE_SAME(SAGE_FAMILY_SPECIAL, sage::Family::Special);
SAGE_SAME(SAGE_FAMILY_TIME, sage::Family::Time);
SAGE_SAME(SAGE_FAMILY_PROGRAM, sage::Family::Program);
SAGE_SAME(SAGE_FAMILY_PITCH, sage::Family::Pitch);
SAGE_SAME(SAGE_FAMILY_VELOCITY, sage::Family::Velocity);
SAGE_SAME(SAGE_FAMILY_DURATION, sage::Family::Duration);
static_assert(SAGE_FAMILY_DURATION + 1 == sage::kNumFamilies, "a family is missing");
SAGE_SAME(SAGE_STOP_BARS, sage::StopReason::Bars);
SAGE_SAME(SAGE_STOP_TIME, sage::StopReason::Time);
SAGE_SAME(SAGE_STOP_END, sage::StopReason::End);
SAGE_SAME(SAGE_STOP_MAX_TOKENS, sage::StopReason::MaxTokens);
SAGE_SAME(SAGE_STOP_BAR_LINE, sage::StopReason::BarLine);
SAGE_SAME(SAGE_STOP_CAPACITY, sage::StopReason::Capacity);
static_assert(SAGE_MAX_TOKENS_PER_BAR == sage::Session::kMaxTokensPerBar, "one token cap");
#undef SAGE_SAME

thread_local std::string last_error;

sage_status fail(sage_status status, const std::string& message) {
    last_error = message;
    return status;
}

// Runs `body`, turning whatever it throws into a status code and a message.
template <typename Body>
sage_status guarded(Body&& body) {
    try {
        body();
        return SAGE_OK;
    } catch (const sage::Error& e) {
        return fail(static_cast<sage_status>(e.status()), e.what());
    } catch (const std::bad_alloc&) {
        return fail(SAGE_ERR_MEMORY, "out of memory");
    } catch (const std::exception& e) {
        return fail(SAGE_ERR_INTERNAL, std::string("internal error: ") + e.what());
    } catch (...) {
        return fail(SAGE_ERR_INTERNAL, "internal error");
    }
}

void require(const void* pointer, const char* name) {
    if (pointer == nullptr)
        throw sage::Error(sage::Status::Argument, std::string(name) + " is null");
}

// The engine's options from the C ones (null: the defaults); Session checks them.
sage::SessionOptions session_options(const sage_session_options* options) {
    const sage_session_options o = options ? *options : sage_session_options_default();
    sage::SessionOptions so;
    so.seed = o.seed;
    so.kv_memory = static_cast<sage::KvMemory>(o.kv_memory);
    return so;
}

sage_jam_note to_c(const sage::JamNote& n) {
    return {n.time_us, n.end_us, n.tick, n.end_tick, n.pitch, n.velocity, n.program, n.channel};
}

sage_memory to_c(const sage::MemoryReport& r) {
    return sage_memory{r.weights_bytes, r.activation_bytes, r.kv_bytes, r.total_bytes};
}

sage::LiveOptions to_live_options(const sage_live_options& o) {
    sage::LiveOptions lo;
    lo.start_us = o.start_us;
    lo.us_per_quarter = o.us_per_quarter;
    lo.bar_quarters = o.bar_quarters;
    for (int c = 0; c < 16; ++c) lo.channel_programs[c] = o.channel_programs[c];
    lo.follow_clock = o.follow_clock != 0;
    return lo;
}

sage::SamplingParams to_params(const sage_sampling* s) {
    sage::SamplingParams p;
    p.temperature = s->temperature;
    p.top_k = s->top_k;
    p.top_p = s->top_p;
    p.min_p = s->min_p;
    sage::Session::check_sampling(p);
    return p;
}

// Moves up to `capacity` items to out, adding to *count, in batches of 64 through a stack buffer
// (nothing allocated): take(batch, want) fills a batch, a short one is the last; to_c converts.
template <typename Item, typename Out, typename Take, typename ToC>
void in_batches(Out* out, size_t capacity, size_t* count, Take&& take, ToC&& to_c) {
    Item batch[64];
    while (*count < capacity) {
        const size_t want = std::min<size_t>(64, capacity - *count);
        const size_t got = take(batch, want);
        for (size_t i = 0; i < got; ++i) out[(*count)++] = to_c(batch[i]);
        if (got < want) break;
    }
}

// The calls that write bytes: the arguments checked, *written set.
template <typename Write>
sage_status write_bytes(sage_midi_scheduler* scheduler, uint8_t* out, size_t capacity,
                        size_t* written, Write&& write) {
    return guarded([&] {
        require(scheduler, "scheduler");
        require(written, "written");
        *written = 0;
        if (capacity > 0) require(out, "out");
        *written = write(scheduler->scheduler);
    });
}

// The player's calls that write bytes: room for a whole message at least.
template <typename Write>
sage_status player_bytes(sage_jam_player* player, uint8_t* out, size_t capacity, size_t* written,
                         Write&& write) {
    return guarded([&] {
        require(player, "player");
        require(written, "written");
        *written = 0;
        require(out, "out");
        if (capacity < SAGE_MIDI_MAX_MESSAGE_BYTES)
            throw sage::Error(sage::Status::Argument,
                              "room for a MIDI message is " +
                                  std::to_string(SAGE_MIDI_MAX_MESSAGE_BYTES) + " bytes, not " +
                                  std::to_string(capacity));
        *written = write(player->player);
    });
}

}  // namespace

extern "C" {

const char* sage_version(void) {
    return SAGE_EDGE_VERSION;  // the package's version, defined by csrc/engine/CMakeLists.txt
}

const char* sage_kernel_name(void) {
    return sage::kernels::select_error() == nullptr ? sage::kernels::active().name : "none";
}

const char* sage_cpu_features(void) {
    return sage::kernels::cpu_features();
}

const char* sage_last_error(void) {
    return last_error.c_str();
}

const char* sage_status_string(sage_status status) {
    switch (status) {
        case SAGE_OK:
            return "ok";
        case SAGE_ERR_IO:
            return "I/O error";
        case SAGE_ERR_FORMAT:
            return "invalid model file";
        case SAGE_ERR_ARGUMENT:
            return "bad argument";
        case SAGE_ERR_MEMORY:
            return "out of memory";
        case SAGE_ERR_KERNEL:
            return "kernel path not available";
        case SAGE_ERR_STATE:
            return "bad session state";
        case SAGE_ERR_INTERNAL:
            return "internal error";
    }
    return "unknown status";
}

sage_sampling sage_sampling_default(void) {
    const sage::SamplingParams defaults;
    return sage_sampling{defaults.temperature, defaults.top_k, defaults.top_p, defaults.min_p};
}

sage_session_options sage_session_options_default(void) {
    const sage::SessionOptions defaults;  // the one place the defaults are written
    return sage_session_options{defaults.seed, static_cast<uint32_t>(defaults.kv_memory)};
}

sage_status sage_sampling_check(const sage_sampling* sampling) {
    return guarded([&] {
        require(sampling, "sampling");
        to_params(sampling);
    });
}

sage_status sage_tempo_check(double bpm) {
    return guarded([&] {
        if (!(bpm >= SAGE_TEMPO_MIN_BPM && bpm <= SAGE_TEMPO_MAX_BPM)) {
            char message[160];
            std::snprintf(message, sizeof message,
                          "tempo must be in %.6g..%g BPM (the range a MIDI file holds), not %g",
                          SAGE_TEMPO_MIN_BPM, SAGE_TEMPO_MAX_BPM, bpm);
            throw sage::Error(sage::Status::Argument, message);
        }
    });
}

sage_controls sage_controls_default(void) {
    return sage::Controls::defaults();
}

sage_status sage_controls_check(const sage_controls* controls) {
    return guarded([&] {
        require(controls, "controls");
        sage::Controls::check(*controls);
    });
}

sage_status sage_controls_set(sage_controls* controls, const char* name, const char* value) {
    return guarded([&] {
        require(controls, "controls");
        sage::Controls::set_text(*controls, name, value);
    });
}

size_t sage_controls_count(void) {
    return sage::Controls::count();
}

sage_status sage_controls_describe(size_t i, const char** name, const char** syntax,
                                   const char** help) {
    return guarded([&] {
        if (!sage::Controls::describe(i, name, syntax, help))
            throw sage::Error(sage::Status::Argument,
                              "control " + std::to_string(i) + " past the last (" +
                                  std::to_string(sage::Controls::count()) + " controls)");
    });
}

sage_status sage_controls_usual_range(int32_t program, int32_t* low, int32_t* high) {
    return guarded([&] {
        require(low, "low");
        require(high, "high");
        sage::Controls::usual_range(program, low, high);
    });
}

const char* sage_quant_name(uint32_t quant) {
    switch (quant) {
        case SAGE_QUANT_F32:
            return "f32";
        case SAGE_QUANT_Q8_0:
            return "q8_0";
        case SAGE_QUANT_Q4:
            return "q4";
    }
    return "unknown";
}

const char* sage_kv_memory_name(uint32_t kv_memory) {
    switch (kv_memory) {
        case SAGE_KV_F32:
            return "f32";
        case SAGE_KV_INT8:
            return "int8";
    }
    return "unknown";
}

sage_status sage_kv_memory_parse(const char* name, uint32_t* out) {
    return guarded([&] {
        require(name, "name");
        require(out, "out");
        for (uint32_t kind : {SAGE_KV_F32, SAGE_KV_INT8}) {
            if (std::strcmp(name, sage_kv_memory_name(kind)) == 0) {
                *out = kind;
                return;
            }
        }
        throw sage::Error(sage::Status::Argument,
                          std::string("kv memory must be f32 or int8, not '") + name + "'");
    });
}

const char* sage_attention_name(uint32_t attention) {
    switch (attention) {
        case SAGE_ATTENTION_MHA:
            return "mha";
        case SAGE_ATTENTION_GQA:
            return "gqa";
        case SAGE_ATTENTION_ASKV:
            return "askv";
    }
    return "unknown";
}

sage_status sage_model_load(const char* path, sage_model** out) {
    return guarded([&] {
        require(path, "path");
        require(out, "out");
        *out = nullptr;
        if (const char* error = sage::kernels::select_error())
            throw sage::Error(sage::Status::Kernel, error);
        auto model = std::make_unique<sage_model>();
        model->model = sage::Model::load(path);
        *out = model.release();
    });
}

void sage_model_free(sage_model* model) {
    delete model;
}

sage_status sage_model_get_info(const sage_model* model, sage_model_info* out) {
    return guarded([&] {
        require(model, "model");
        require(out, "out");
        const sage::Model& m = *model->model;
        const sage::Config& c = m.config;
        *out = sage_model_info{};
        out->vocab_size = c.vocab_size;
        out->n_layers = c.n_layers;
        out->d_model = c.d_model;
        out->n_heads = c.n_heads;
        out->n_kv_heads = c.n_kv_heads;
        out->d_head = c.d_head;
        out->d_ff = c.d_ff;
        out->n_families = c.n_families;
        out->attention = static_cast<uint32_t>(c.attention);
        out->quant = static_cast<uint32_t>(m.quant);
        out->ticks_per_quarter = c.ticks_per_quarter;
        out->norm_eps = c.norm_eps;
        out->parameters = m.parameters;
        out->file_bytes = m.file_bytes;
        out->budget = 0;
        for (uint32_t h : m.horizons) out->budget += h;
    });
}

sage_status sage_model_get_horizons(const sage_model* model, uint32_t* out, size_t n) {
    return guarded([&] {
        require(model, "model");
        const auto& h = model->model->horizons;
        if (n > 0) require(out, "out");
        for (size_t i = 0; i < n && i < h.size(); ++i) out[i] = h[i];
    });
}

sage_status sage_model_get_token(const sage_model* model, int32_t id, uint32_t* family,
                                 uint32_t* kind, int32_t* a, int32_t* b) {
    return guarded([&] {
        require(model, "model");
        const auto& vocab = model->model->vocab;
        if (id < 0 || static_cast<size_t>(id) >= vocab.size())
            throw sage::Error(sage::Status::Argument, "token id " + std::to_string(id) +
                                                          " is outside the vocabulary of " +
                                                          std::to_string(vocab.size()) + " tokens");
        const sage::TokenInfo& token = vocab[static_cast<size_t>(id)];
        if (family) *family = static_cast<uint32_t>(token.family);
        if (kind) *kind = static_cast<uint32_t>(token.kind);
        if (a) *a = token.a;
        if (b) *b = token.b;
    });
}

sage_status sage_model_find_kind(const sage_model* model, uint32_t kind, int32_t* id) {
    return guarded([&] {
        require(model, "model");
        require(id, "id");
        *id = -1;
        const auto& vocab = model->model->vocab;
        for (size_t i = 0; i < vocab.size() && *id < 0; ++i)
            if (static_cast<uint32_t>(vocab[i].kind) == kind) *id = static_cast<int32_t>(i);
    });
}

sage_status sage_model_get_metadata(const sage_model* model, const char** json, size_t* size) {
    return guarded([&] {
        require(model, "model");
        require(json, "json");
        require(size, "size");
        *json = model->model->metadata_json.data();
        *size = model->model->metadata_json.size();
    });
}

sage_status sage_model_get_learned_programs(const sage_model* model, int32_t* programs,
                                            uint64_t* notes, size_t n, size_t* count) {
    return guarded([&] {
        require(model, "model");
        require(count, "count");
        const auto& learned = model->model->learned_programs;
        *count = learned.size();
        for (size_t i = 0; i < n && i < learned.size(); ++i) {
            if (programs) programs[i] = learned[i].program;
            if (notes) notes[i] = learned[i].notes;
        }
    });
}

sage_status sage_session_create(const sage_model* model, const sage_session_options* options,
                                sage_session** out) {
    return guarded([&] {
        require(model, "model");
        require(out, "out");
        *out = nullptr;
        if (const char* error = sage::kernels::select_error())
            throw sage::Error(sage::Status::Kernel, error);
        const sage::SessionOptions so = session_options(options);
        auto session = std::make_unique<sage_session>();
        session->session =
            std::make_unique<sage::Session>(*model->model, so, sage::kernels::active());
        *out = session.release();
    });
}

void sage_session_free(sage_session* session) {
    delete session;
}

sage_status sage_session_reset(sage_session* session) {
    return guarded([&] {
        require(session, "session");
        session->session->reset();
    });
}

sage_status sage_session_set_programs(sage_session* session, const int32_t* programs, size_t n) {
    return guarded([&] {
        require(session, "session");
        session->session->set_programs(programs, n);
    });
}

sage_status sage_session_set_controls(sage_session* session, const sage_controls* controls) {
    return guarded([&] {
        require(session, "session");
        require(controls, "controls");
        session->session->set_controls(*controls);
    });
}

sage_status sage_session_get_controls(const sage_session* session, sage_controls* out) {
    return guarded([&] {
        require(session, "session");
        require(out, "out");
        *out = session->session->controls();
    });
}

sage_status sage_session_set_meter(sage_session* session, int32_t numerator, int32_t denominator) {
    return guarded([&] {
        require(session, "session");
        session->session->set_meter(numerator, denominator);
    });
}

sage_status sage_session_feed(sage_session* session, const int32_t* tokens, size_t n, float* logits,
                              int all_logits) {
    return guarded([&] {
        require(session, "session");
        session->session->feed(tokens, n, logits, all_logits != 0);
    });
}

sage_status sage_session_sample(sage_session* session, const sage_sampling* sampling,
                                int32_t* token) {
    return guarded([&] {
        require(session, "session");
        require(sampling, "sampling");
        require(token, "token");
        *token = session->session->sample(to_params(sampling));
    });
}

sage_status sage_session_generate(sage_session* session, const sage_sampling* sampling,
                                  int32_t* tokens, size_t n) {
    return guarded([&] {
        require(session, "session");
        require(sampling, "sampling");
        session->session->generate(to_params(sampling), tokens, n);
    });
}

sage_status sage_session_generate_bars(sage_session* session, const sage_sampling* sampling,
                                       sage_bar_stop* stop, int32_t* tokens, size_t capacity,
                                       size_t* count, sage_stop_reason* reason) {
    return guarded([&] {
        require(session, "session");
        require(sampling, "sampling");
        require(stop, "stop");
        require(count, "count");
        require(reason, "reason");
        sage::BarStop bar_stop;
        bar_stop.bars = stop->bars;
        bar_stop.meter_quarters = stop->meter_quarters;
        bar_stop.meter_bars = stop->meter_bars;
        bar_stop.each_bar = stop->each_bar != 0;
        bar_stop.ends_piece = stop->ends_piece != 0;
        bar_stop.opened = stop->opened;
        bar_stop.generated = stop->generated;
        bar_stop.end = stop->end;
        sage::StopReason why = sage::StopReason::Capacity;
        // Written only on success: a refused call leaves *stop, *count and *reason as they were.
        const size_t n =
            session->session->generate_bars(to_params(sampling), bar_stop, tokens, capacity, &why);
        stop->opened = bar_stop.opened;
        stop->generated = bar_stop.generated;
        stop->end = bar_stop.end;
        *count = n;
        *reason = static_cast<sage_stop_reason>(why);
    });
}

sage_status sage_session_get_position(const sage_session* session, uint64_t* position) {
    return guarded([&] {
        require(session, "session");
        require(position, "position");
        *position = session->session->position();
    });
}

sage_status sage_session_get_tempo(const sage_session* session, double* bpm) {
    return guarded([&] {
        require(session, "session");
        require(bpm, "bpm");
        *bpm = session->session->tempo_bpm();
    });
}

sage_status sage_session_allowed_next(const sage_session* session, uint8_t* mask, size_t n) {
    return guarded([&] {
        require(session, "session");
        require(mask, "mask");
        const size_t V = static_cast<size_t>(session->session->model().config.vocab_size);
        if (n != V)
            throw sage::Error(sage::Status::Argument, "mask holds " + std::to_string(n) +
                                                          " entries, the vocabulary " +
                                                          std::to_string(V));
        session->session->allowed_next(mask);
    });
}

sage_status sage_session_get_bar(const sage_session* session, sage_bar* out) {
    return guarded([&] {
        require(session, "session");
        require(out, "out");
        const sage::BarInfo bar = session->session->bar();
        *out = sage_bar{bar.index, bar.start, bar.numerator, bar.denominator};
    });
}

sage_status sage_model_get_session_memory(const sage_model* model,
                                          const sage_session_options* options, sage_memory* out) {
    return guarded([&] {
        require(model, "model");
        require(out, "out");
        *out = to_c(sage::Session::planned_memory(*model->model, session_options(options)));
    });
}

sage_status sage_session_get_memory(const sage_session* session, sage_memory* out) {
    return guarded([&] {
        require(session, "session");
        require(out, "out");
        *out = to_c(session->session->memory());
    });
}

sage_status sage_session_pop_events(sage_session* session, sage_note_event* events, size_t capacity,
                                    size_t* count) {
    return guarded([&] {
        require(session, "session");
        require(count, "count");
        *count = 0;
        if (capacity > 0) require(events, "events");
        in_batches<sage::NoteEvent>(
            events, capacity, count,
            [&](sage::NoteEvent* batch, size_t want) {
                return session->session->pop_events(batch, want);
            },
            [](const sage::NoteEvent& e) {
                return sage_note_event{e.time, e.duration, e.pitch, e.velocity, e.program};
            });
    });
}

sage_status sage_session_get_dropped_events(const sage_session* session, uint64_t* dropped) {
    return guarded([&] {
        require(session, "session");
        require(dropped, "dropped");
        *dropped = session->session->dropped_events();
    });
}

/* ---- MIDI output ---- */

static_assert(SAGE_MIDI_CHANNEL_AUTO == sage::kMidiAutoChannel, "one channel for 'choose one'");
static_assert(SAGE_MIDI_MAX_MESSAGE_BYTES == sage::kMidiMaxMessageBytes, "one message size");

sage_status sage_midi_scheduler_create(size_t notes, sage_midi_scheduler** out) {
    return guarded([&] {
        require(out, "out");
        *out = nullptr;
        if (notes == 0 || notes > SAGE_MIDI_SCHEDULER_MAX_NOTES)
            throw sage::Error(sage::Status::Argument,
                              "a MIDI scheduler holds 1.." +
                                  std::to_string(SAGE_MIDI_SCHEDULER_MAX_NOTES) + " notes, not " +
                                  std::to_string(notes));
        *out = new sage_midi_scheduler{sage::MidiScheduler(notes)};
    });
}

void sage_midi_scheduler_free(sage_midi_scheduler* scheduler) {
    delete scheduler;
}

sage_status sage_midi_scheduler_add(sage_midi_scheduler* scheduler, const sage_midi_note* note) {
    return guarded([&] {
        require(scheduler, "scheduler");
        require(note, "note");
        if (note->channel != SAGE_MIDI_CHANNEL_AUTO && (note->channel < 0 || note->channel > 15))
            throw sage::Error(sage::Status::Argument, "a MIDI channel is 0..15");
        const sage::ScheduledNote n{note->time,     note->end,     note->pitch,
                                    note->velocity, note->program, note->channel};
        if (!scheduler->scheduler.add(n))
            throw sage::Error(sage::Status::State, "the MIDI scheduler is full");
    });
}

sage_status sage_midi_scheduler_get_state(const sage_midi_scheduler* scheduler,
                                          sage_midi_scheduler_state* out) {
    return guarded([&] {
        require(scheduler, "scheduler");
        require(out, "out");
        const sage::MidiScheduler& s = scheduler->scheduler;
        out->queued = s.queued();
        out->free_notes = s.free_notes();
        out->next_time = s.empty() ? 0.0 : s.next_time();
    });
}

sage_status sage_midi_scheduler_take_due(sage_midi_scheduler* scheduler, double time, uint8_t* out,
                                         size_t capacity, size_t* written) {
    return write_bytes(scheduler, out, capacity, written,
                       [&](sage::MidiScheduler& s) { return s.take_due(time, out, capacity); });
}

sage_status sage_midi_scheduler_skip_before(sage_midi_scheduler* scheduler, double time,
                                            uint8_t* out, size_t capacity, size_t* written) {
    return write_bytes(scheduler, out, capacity, written,
                       [&](sage::MidiScheduler& s) { return s.skip_before(time, out, capacity); });
}

sage_status sage_midi_scheduler_release(sage_midi_scheduler* scheduler, uint8_t* out,
                                        size_t capacity, size_t* written) {
    return write_bytes(scheduler, out, capacity, written,
                       [&](sage::MidiScheduler& s) { return s.release(out, capacity); });
}

sage_status sage_midi_scheduler_silence(sage_midi_scheduler* scheduler, uint8_t* out,
                                        size_t capacity, size_t* written) {
    return write_bytes(scheduler, out, capacity, written,
                       [&](sage::MidiScheduler& s) { return s.silence(out, capacity); });
}

/* ---- Live input ---- */

sage_live_options sage_live_options_default(void) {
    sage_live_options o{};
    o.start_us = 0;
    o.us_per_quarter = 500000;
    o.bar_quarters = 4;
    for (int c = 0; c < 16; ++c) o.channel_programs[c] = c == 9 ? -1 : 0;
    return o;
}

sage_status sage_live_create(const sage_model* model, const sage_live_options* options,
                             sage_live** out) {
    return guarded([&] {
        require(model, "model");
        require(out, "out");
        *out = nullptr;
        const sage_live_options o = options ? *options : sage_live_options_default();
        const sage::LiveOptions lo = to_live_options(o);
        const sage::Model& m = *model->model;
        auto live = std::make_unique<sage_live>();
        live->owned = std::make_unique<sage::LiveEncoder>(m.vocab.data(), m.config.vocab_size,
                                                          m.config.ticks_per_quarter, lo);
        live->encoder = live->owned.get();
        *out = live.release();
    });
}

void sage_live_free(sage_live* live) {
    delete live;
}

sage_status sage_live_reset(sage_live* live) {
    return guarded([&] {
        require(live, "live");
        live->encoder->reset();
    });
}

sage_status sage_live_note(sage_live* live, int64_t time_us, int32_t channel, int32_t pitch,
                           int32_t velocity) {
    return guarded([&] {
        require(live, "live");
        live->encoder->note_on(time_us, channel, pitch, velocity);
    });
}

sage_status sage_live_program(sage_live* live, int32_t channel, int32_t program) {
    return guarded([&] {
        require(live, "live");
        live->encoder->program_change(channel, program);
    });
}

sage_status sage_live_tempo(sage_live* live, int64_t time_us, uint32_t us_per_quarter) {
    return guarded([&] {
        require(live, "live");
        live->encoder->tempo(time_us, us_per_quarter);
    });
}

sage_status sage_live_set_meter(sage_live* live, uint64_t bar, int32_t quarters) {
    return guarded([&] {
        require(live, "live");
        live->encoder->set_meter(bar, quarters);
    });
}

sage_status sage_live_meter(sage_live* live, int64_t time_us, int32_t quarters, uint64_t* bar) {
    return guarded([&] {
        require(live, "live");
        const uint64_t from = live->encoder->meter(time_us, quarters);
        if (bar) *bar = from;
    });
}

sage_status sage_live_get_bar(const sage_live* live, uint64_t bar, int64_t* start_tick,
                              int32_t* quarters) {
    return guarded([&] {
        require(live, "live");
        require(start_tick, "start_tick");
        require(quarters, "quarters");
        if (!live->encoder->bar_at(bar, start_tick, quarters))
            throw sage::Error(sage::Status::Argument,
                              "bar " + std::to_string(bar) + " is older than the bar table");
    });
}

sage_status sage_live_midi(sage_live* live, int64_t time_us, const uint8_t* bytes, size_t n) {
    return guarded([&] {
        require(live, "live");
        if (n > 0) require(bytes, "bytes");
        live->encoder->midi(time_us, bytes, n);
    });
}

sage_status sage_live_take_bar(sage_live* live, int64_t now_us, int force, int32_t* tokens,
                               size_t capacity, size_t* count) {
    return guarded([&] {
        require(live, "live");
        require(count, "count");
        *count = 0;
        if (capacity > 0) require(tokens, "tokens");
        *count = live->encoder->take_bar(now_us, force != 0, tokens, capacity);
    });
}

sage_status sage_live_take_final(sage_live* live, int64_t now_us, int32_t* tokens, size_t capacity,
                                 size_t* count) {
    return guarded([&] {
        require(live, "live");
        require(count, "count");
        *count = 0;
        if (capacity > 0) require(tokens, "tokens");
        *count = live->encoder->take_final(now_us, tokens, capacity);
    });
}

sage_status sage_live_time_of(const sage_live* live, int64_t tick, int64_t* time_us) {
    return guarded([&] {
        require(live, "live");
        require(time_us, "time_us");
        *time_us = live->encoder->time_of(tick);
    });
}

sage_status sage_live_tick_at(const sage_live* live, int64_t time_us, int64_t* tick) {
    return guarded([&] {
        require(live, "live");
        require(tick, "tick");
        *tick = live->encoder->tick_at(time_us);
    });
}

sage_status sage_live_get_counts(const sage_live* live, sage_live_counts* out) {
    return guarded([&] {
        require(live, "live");
        require(out, "out");
        const sage::LiveCounts c = live->encoder->counts();
        out->bars_taken = c.bars_written;
        out->notes = c.notes;
        out->late = c.late;
        out->dropped = c.dropped;
        out->sounding = c.sounding;
        out->waiting = c.waiting;
        out->clock_tick = c.clock_tick;
        out->clock_start_tick = c.clock_start_tick;
        out->clock_from_tick = c.clock_from_tick;
        out->clock_stops = c.clock_stops;
        out->clock_running = c.clock_running;
        out->notes_while_stopped = c.notes_while_stopped;
    });
}

/* ---- Playing with a musician ---- */

static_assert(SAGE_JAM_LISTEN_BEAT == sage::kListenBeat && SAGE_JAM_AUTO == sage::kAuto,
              "the C API's accompaniment defaults are the engine's");

sage_jam_options sage_jam_options_default(void) {
    sage_jam_options o{};
    o.mode = SAGE_JAM_CALL_RESPONSE;
    o.phrase_bars = 4;
    o.rest_quarters = 0;
    const sage::JamOptions defaults;  // accompaniment's defaults live there
    o.lookahead_bars = defaults.lookahead_bars;
    o.listen_ticks = defaults.listen_ticks;
    o.predict = defaults.predict ? 1 : 0;
    o.react = defaults.react;
    o.n_programs = 1;
    o.sampling = sage_sampling_default();
    o.seed = 0;
    o.live = sage_live_options_default();
    return o;
}

sage_status sage_jam_create(const sage_model* model, const sage_jam_options* options,
                            sage_jam** out) {
    return guarded([&] {
        require(model, "model");
        require(out, "out");
        *out = nullptr;
        if (const char* error = sage::kernels::select_error())
            throw sage::Error(sage::Status::Kernel, error);
        const sage_jam_options o = options ? *options : sage_jam_options_default();
        sage::JamOptions jo;
        jo.mode = static_cast<sage::JamMode>(o.mode);
        jo.phrase_bars = o.phrase_bars;
        jo.rest_quarters = o.rest_quarters;
        jo.lookahead_bars = o.lookahead_bars;
        jo.listen_ticks = o.listen_ticks;
        if (o.predict != 0 && o.predict != 1)
            throw sage::Error(sage::Status::Argument, "predict must be 0 or 1");
        jo.predict = o.predict == 1;
        jo.react = o.react;  // 0, 1 or SAGE_JAM_AUTO: the engine checks it
        if (o.n_programs > 16) throw sage::Error(sage::Status::Argument, "at most 16 programs");
        for (uint32_t i = 0; i < o.n_programs; ++i) jo.programs[i] = o.programs[i];
        jo.n_programs = o.n_programs;
        jo.sampling = to_params(&o.sampling);
        jo.seed = o.seed;
        jo.live = to_live_options(o.live);
        auto jam = std::make_unique<sage_jam>();
        jam->jam = std::make_unique<sage::Jam>(*model->model, jo, sage::kernels::active());
        jam->options = o;
        jam->live.encoder = &jam->jam->live();
        *out = jam.release();
    });
}

void sage_jam_free(sage_jam* jam) {
    delete jam;
}

sage_status sage_jam_get_live(sage_jam* jam, sage_live** live) {
    return guarded([&] {
        require(jam, "jam");
        require(live, "live");
        *live = &jam->live;
    });
}

sage_status sage_jam_poll(sage_jam* jam, int64_t now_us, sage_jam_note* out, size_t capacity,
                          size_t* count) {
    return guarded([&] {
        require(jam, "jam");
        require(count, "count");
        *count = 0;
        if (capacity > 0) require(out, "out");
        sage::JamNote notes[64];
        const size_t n = jam->jam->poll(now_us, notes, capacity < 64 ? capacity : 64);
        for (size_t i = 0; i < n; ++i) out[i] = to_c(notes[i]);
        *count = n;
    });
}

sage_status sage_jam_get_options(const sage_jam* jam, sage_jam_options* out) {
    return guarded([&] {
        require(jam, "jam");
        require(out, "out");
        *out = jam->options;
        out->listen_ticks = jam->jam->options().listen_ticks;  // resolved by the mode
        out->react = jam->jam->options().react;
    });
}

sage_status sage_jam_get_state(const sage_jam* jam, sage_jam_state* out) {
    return guarded([&] {
        require(jam, "jam");
        require(out, "out");
        out->answering = jam->jam->answering() ? 1 : 0;
        out->answers = jam->jam->answers();
        out->tokens = jam->jam->session().position();
        out->dropped_notes = jam->jam->dropped_notes();
        out->replays = jam->jam->replays();
        out->replayed_tokens = jam->jam->replayed_tokens();
        out->generating = jam->jam->generating() ? 1 : 0;
    });
}

sage_status sage_jam_set_controls(sage_jam* jam, const sage_controls* controls) {
    return guarded([&] {
        require(jam, "jam");
        require(controls, "controls");
        jam->jam->set_controls(*controls);
    });
}

sage_status sage_jam_get_history(const sage_jam* jam, int32_t* tokens, size_t capacity,
                                 size_t* count) {
    return guarded([&] {
        require(jam, "jam");
        require(count, "count");
        *count = 0;
        if (capacity > 0) require(tokens, "tokens");
        *count = jam->jam->history(tokens, capacity);
    });
}

/* ---- Playing a jam's notes ---- */

static_assert(SAGE_JAM_PLAYER_NOTES == sage::JamPlayer::kNotes, "one player queue");
static_assert(SAGE_JAM_LATE_US == sage::JamPlayer::kLateUs, "one lateness");

sage_status sage_jam_player_create(sage_jam* jam, int32_t lead_clock, sage_jam_player** out) {
    return guarded([&] {
        require(jam, "jam");
        require(out, "out");
        *out = nullptr;
        *out = new sage_jam_player{sage::JamPlayer(*jam->jam, lead_clock != 0)};
    });
}

void sage_jam_player_free(sage_jam_player* player) {
    delete player;
}

sage_status sage_jam_player_poll(sage_jam_player* player, int64_t now_us, sage_jam_note* out,
                                 size_t capacity, size_t* count) {
    return guarded([&] {
        require(player, "player");
        require(count, "count");
        *count = 0;
        if (capacity > 0) require(out, "out");
        in_batches<sage::JamNote>(
            out, capacity, count,
            [&](sage::JamNote* batch, size_t want) {
                return player->player.poll(now_us, batch, want);
            },
            [](const sage::JamNote& n) { return to_c(n); });
    });
}

sage_status sage_jam_player_take_due(sage_jam_player* player, int64_t now_us, uint8_t* out,
                                     size_t capacity, size_t* written) {
    return player_bytes(player, out, capacity, written,
                        [&](sage::JamPlayer& p) { return p.take_due(now_us, out, capacity); });
}

sage_status sage_jam_player_input_ended(sage_jam_player* player, int64_t now_us) {
    return guarded([&] {
        require(player, "player");
        player->player.input_ended(now_us);
    });
}

sage_status sage_jam_player_wait(const sage_jam_player* player, int64_t now_us, int64_t* wait_us) {
    return guarded([&] {
        require(player, "player");
        require(wait_us, "wait_us");
        *wait_us = player->player.wait_us(now_us);
    });
}

sage_status sage_jam_player_stop(sage_jam_player* player, uint8_t* out, size_t capacity,
                                 size_t* written) {
    return player_bytes(player, out, capacity, written,
                        [&](sage::JamPlayer& p) { return p.stop(out, capacity); });
}

sage_status sage_jam_player_get_state(const sage_jam_player* player, sage_jam_player_state* out) {
    return guarded([&] {
        require(player, "player");
        require(out, "out");
        const sage::JamPlayer& p = player->player;
        out->notes = p.notes();
        out->dropped = p.dropped();
        out->late_sends = p.late_sends();
        out->worst_late_us = p.worst_late_us();
        out->pulses = p.pulses();
        out->queued = p.queued();
        out->closing = p.closing() ? 1 : 0;
        out->done = p.done() ? 1 : 0;
    });
}

}  // extern "C"
