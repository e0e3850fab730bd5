// A decode step allocates nothing: every global operator new (and, on glibc without a sanitizer,
// malloc) is counted, and feeding, sampling, generating and reading events after session creation
// must leave the count at zero. This is what makes a session safe in a real-time audio thread.
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <new>
#include <vector>

#include "counting_allocator.h"
#include "engine/model_file.h"
#include "engine/session.h"
#include "engine_fixtures.h"
#include "sage_edge/sage_edge.h"
#include "testing.h"

#if defined(__GLIBC__) && !defined(__SANITIZE_ADDRESS__) && !defined(__clang__)
// malloc itself, through glibc's internal entry points.
extern "C" {
void* __libc_malloc(size_t);
void* __libc_calloc(size_t, size_t);
void* __libc_realloc(void*, size_t);
void* malloc(size_t n) {
    sage::testing::note_allocation();
    return __libc_malloc(n);
}
void* calloc(size_t n, size_t size) {
    sage::testing::note_allocation();
    return __libc_calloc(n, size);
}
void* realloc(void* p, size_t n) {
    sage::testing::note_allocation();
    return __libc_realloc(p, n);
}
}
#endif

namespace {

using sage::testing::count_allocations;
using sage::testing::fixture_models;
using sage::testing::load_or_die;

TEST(decode_steps_allocate_nothing) {
    for (const auto& path : fixture_models())
        for (uint32_t kv : {SAGE_KV_F32, SAGE_KV_INT8}) {
            int32_t bos = 0;
            {
                auto model = sage::Model::load(path);
                for (size_t t = 0; t < model->vocab.size(); ++t)
                    if (model->vocab[t].kind == sage::Kind::Bos) bos = static_cast<int32_t>(t);
            }
            sage_model* model = load_or_die(path);
            sage_model_info info{};
            sage_model_get_info(model, &info);
            sage_session* session = nullptr;
            // Creation allocates: this proves the hook counts.
            sage_session_options options = sage_session_options_default();
            options.kv_memory = kv;
            CHECK(count_allocations([&] {
                      CHECK_EQ(sage_session_create(model, &options, &session), SAGE_OK);
                  }) > 0);
            std::vector<float> logits(info.vocab_size);
            std::vector<int32_t> prompt(150);
            for (size_t i = 0; i < prompt.size(); ++i)
                prompt[i] = static_cast<int32_t>(i % info.vocab_size);
            std::vector<sage_note_event> events(64);
            const sage_sampling sampling = sage_sampling_default();
            int32_t generated[32];
            size_t count = 0;
            // Every control on, soft and strict (parsing text allocates, so it happens here).
            sage_controls soft = sage_controls_default(), strict;
            const char* const settings[][2] = {
                {"key", "D:minor"},       {"key-mode", "soft"},        {"range", "usual,52:60-79"},
                {"velocity", "40-100"},   {"max-polyphony", "4,42:1"}, {"density", "2-12"},
                {"no-parallels", "soft"}, {"plays-after", "1"},        {"end", "cadence"}};
            for (const auto& s : settings) CHECK_EQ(sage_controls_set(&soft, s[0], s[1]), SAGE_OK);
            strict = soft;
            CHECK_EQ(sage_controls_set(&strict, "key-mode", "strict"), SAGE_OK);
            CHECK_EQ(sage_controls_set(&strict, "no-parallels", "strict"), SAGE_OK);
            int32_t program_token = -1, program = 0;
            CHECK_EQ(sage_model_find_kind(model, SAGE_KIND_PROGRAM, &program_token), SAGE_OK);
            sage_model_get_token(model, program_token, nullptr, nullptr, &program, nullptr);

            const long during_decoding = count_allocations([&] {
                sage_session_feed(session, &bos, 1, logits.data(), 0);
                for (int step = 0; step < 200; ++step) {  // the decode step: sample, then feed
                    int32_t token = 0;
                    CHECK_EQ(sage_session_sample(session, &sampling, &token), SAGE_OK);
                    CHECK_EQ(sage_session_feed(session, &token, 1, logits.data(), 0), SAGE_OK);
                }
                CHECK_EQ(sage_session_generate(session, &sampling, generated, 32), SAGE_OK);
                // Controls turned on and changed mid-stream, and the plays bonus's program list.
                CHECK_EQ(sage_session_set_programs(session, &program, 1), SAGE_OK);
                CHECK_EQ(sage_session_set_controls(session, &soft), SAGE_OK);
                CHECK_EQ(sage_session_generate(session, &sampling, generated, 32), SAGE_OK);
                CHECK_EQ(sage_session_set_controls(session, &strict), SAGE_OK);
                // Bar-counted generation, a few tokens per call, then to the end.
                sage_bar_stop stop{};
                stop.bars = 2;
                stop.meter_quarters = 3;
                stop.meter_bars = 2;
                sage_stop_reason reason = SAGE_STOP_CAPACITY;
                CHECK_EQ(sage_session_generate_bars(session, &sampling, &stop, generated, 5, &count,
                                                    &reason),
                         SAGE_OK);
                CHECK_EQ(reason, SAGE_STOP_CAPACITY);
                while (reason == SAGE_STOP_CAPACITY)
                    CHECK_EQ(sage_session_generate_bars(session, &sampling, &stop, generated, 32,
                                                        &count, &reason),
                             SAGE_OK);
                // end = cadence lets EOS end the last bar.
                CHECK(reason == SAGE_STOP_BARS || reason == SAGE_STOP_TIME ||
                      reason == SAGE_STOP_END);
                CHECK_EQ(sage_session_pop_events(session, events.data(), events.size(), &count),
                         SAGE_OK);
                // A prompt of 150 tokens a few hundred tokens in: prefill blocks (the GEMMs, the
                // window copied from the rings, attend_block), past every fixture's horizon.
                CHECK_EQ(sage_session_feed(session, prompt.data(), prompt.size(), nullptr, 0),
                         SAGE_OK);
                CHECK_EQ(sage_session_reset(session), SAGE_OK);
            });
            CHECK_EQ(during_decoding, 0L);

            sage_session_free(session);
            sage_model_free(model);
        }
}

// The forward pass allocates nothing on every kernel path this CPU runs, not only the active one
// (the test above goes through the C API, which uses the active path): a prompt's prefill blocks
// and decode steps, after the model's weights were packed where the path reads them packed.
TEST(forward_passes_allocate_nothing_on_every_path) {
    const sage::kernels::KernelTable* paths[8];
    const int n = sage::kernels::available(paths, 8);
    for (const auto& path : fixture_models())
        for (int i = 0; i < n; ++i) {
            auto model = sage::Model::load(path);
            sage::Session session(*model, sage::SessionOptions{}, *paths[i]);
            std::vector<float> logits(model->config.vocab_size);
            std::vector<int32_t> tokens(300);
            for (size_t t = 0; t < tokens.size(); ++t)
                tokens[t] = static_cast<int32_t>((t * 7) % logits.size());
            const long allocations = count_allocations([&] {
                session.feed(tokens.data(), 150, nullptr, false);  // prefill blocks
                for (size_t t = 150; t < tokens.size(); ++t)       // decode steps
                    session.feed(&tokens[t], 1, logits.data(), false);
            });
            if (allocations != 0) std::fprintf(stderr, "path %s\n", paths[i]->name);
            CHECK_EQ(allocations, 0L);
        }
}

// The live encoder: notes, raw MIDI bytes, tempo changes and taking bars (whole or their final
// parts ahead) allocate nothing.
TEST(live_events_allocate_nothing) {
    sage_model* model = load_or_die(fixture_models()[0]);
    sage_live* live = nullptr;
    CHECK(count_allocations([&] { CHECK_EQ(sage_live_create(model, nullptr, &live), SAGE_OK); }) >
          0);
    int32_t tokens[4096];
    const uint8_t bytes[] = {0x90, 60, 100, 64, 90, 0xF8, 60, 0, 0xC1, 40, 0x91, 50, 80};
    const long during_play = count_allocations([&] {
        size_t count = 0;
        for (int64_t beat = 0; beat < 64; ++beat) {
            const int64_t t = beat * 500000;
            CHECK_EQ(sage_live_midi(live, t, bytes, sizeof bytes), SAGE_OK);
            CHECK_EQ(sage_live_note(live, t + 250000, 1, 50, 0), SAGE_OK);
            CHECK_EQ(sage_live_note(live, t + 250000, 0, 64, 0), SAGE_OK);
            if (beat % 16 == 0) CHECK_EQ(sage_live_tempo(live, t, 450000), SAGE_OK);
            // A meter change ahead every other bar, by bar and by time (3/4, 5/4, 2/4, 4/4).
            if (beat % 8 == 2) {
                sage_live_counts c{};
                CHECK_EQ(sage_live_get_counts(live, &c), SAGE_OK);
                CHECK_EQ(sage_live_set_meter(live, c.bars_taken + 2, 2 + beat % 3), SAGE_OK);
            }
            if (beat % 8 == 6) CHECK_EQ(sage_live_meter(live, t + 1500000, 4, nullptr), SAGE_OK);
            CHECK_EQ(sage_live_take_final(live, t + 100000, tokens, 4096, &count), SAGE_OK);
            CHECK_EQ(sage_live_take_bar(live, t, beat % 8 == 0, tokens, 4096, &count), SAGE_OK);
        }
        sage_live_counts c{};
        CHECK_EQ(sage_live_get_counts(live, &c), SAGE_OK);
        CHECK(c.bars_taken > 4);
        CHECK_EQ(sage_live_reset(live), SAGE_OK);
    });
    CHECK_EQ(during_play, 0L);
    // Following a clock: Start, pulses and notes, Stop (a note held, one played stopped, pulses
    // that do not count), a Song Position Pointer, Continue, Start again.
    sage_live_options o = sage_live_options_default();
    o.follow_clock = 1;
    sage_live* clocked = nullptr;
    CHECK_EQ(sage_live_create(model, &o, &clocked), SAGE_OK);
    const uint8_t start[] = {0xFA}, pulse[] = {0xF8}, stop[] = {0xFC}, go_on[] = {0xFB};
    const uint8_t pointer[] = {0xF2, 20, 0}, on[] = {0x90, 60, 90}, off[] = {0x90, 60, 0};
    const long following = count_allocations([&] {
        int64_t t = 0;
        size_t count = 0;
        for (int round = 0; round < 3; ++round) {
            CHECK_EQ(sage_live_midi(clocked, t, round == 1 ? go_on : start, 1), SAGE_OK);
            for (int p = 0; p < 24 * 9; ++p, t += 20833) {
                CHECK_EQ(sage_live_midi(clocked, t, pulse, 1), SAGE_OK);
                if (p % 24 == 0) CHECK_EQ(sage_live_midi(clocked, t, on, 3), SAGE_OK);
                if (p % 24 == 12 && p < 24 * 8)
                    CHECK_EQ(sage_live_midi(clocked, t, off, 3), SAGE_OK);
                CHECK_EQ(sage_live_take_bar(clocked, t, 1, tokens, 4096, &count), SAGE_OK);
            }
            CHECK_EQ(sage_live_midi(clocked, t, stop, 1), SAGE_OK);
            for (int k = 0; k < 8; ++k, t += 100000) {
                CHECK_EQ(sage_live_midi(clocked, t, k % 2 ? off : on, 3), SAGE_OK);
                CHECK_EQ(sage_live_midi(clocked, t, pulse, 1), SAGE_OK);
                CHECK_EQ(sage_live_take_bar(clocked, t, 1, tokens, 4096, &count), SAGE_OK);
            }
            CHECK_EQ(sage_live_midi(clocked, t, pointer, sizeof pointer), SAGE_OK);
        }
        sage_live_counts c{};
        CHECK_EQ(sage_live_get_counts(clocked, &c), SAGE_OK);
        CHECK_EQ(c.clock_stops, uint64_t{3});
        CHECK(c.bars_taken > 4);
    });
    CHECK_EQ(following, 0L);
    sage_live_free(clocked);
    sage_live_free(live);
    sage_model_free(model);
}

// Playing with a musician: events and polls (feeding the musician's bars, generating answers and
// accompaniment, going back to a bar line and replaying it in time) allocate nothing, and neither
// does playing the notes through the jam player, as the front ends do: on the jam's own clock,
// leading a clock, and following one (Start, pulses, a Stop and Continue, a second Start that
// jumps), polls, due bytes one message a call and many, the waits, the input's end and its tail,
// and the end.
TEST(jam_polls_allocate_nothing) {
    sage_model* model = load_or_die(fixture_models()[0]);
    // Call and response; one bar behind; in time at bar lines, every 2 ticks reacting and
    // predicting; accompaniment's defaults (in time, every beat, reacting); call and response
    // leading a clock, and following one.
    for (int variant = 0; variant < 7; ++variant) {
        sage_jam_options o = sage_jam_options_default();
        o.mode = variant == 0 || variant >= 5 ? SAGE_JAM_CALL_RESPONSE : SAGE_JAM_ACCOMPANY;
        if (variant == 1) o.lookahead_bars = 1;
        if (variant == 2 || variant == 3) {
            o.lookahead_bars = 0;
            o.listen_ticks = variant == 3 ? 2 : 0;
            o.react = o.predict = variant == 3 ? 1 : 0;
        }
        if (variant >= 2 && variant <= 4) o.live.channel_programs[0] = 52;
        const bool lead = variant == 5, follow = variant == 6;
        o.live.follow_clock = follow ? 1 : 0;
        o.phrase_bars = 1;
        o.programs[0] = 42;
        sage_jam* jam = nullptr;
        CHECK(count_allocations([&] { CHECK_EQ(sage_jam_create(model, &o, &jam), SAGE_OK); }) > 0);
        sage_live* live = nullptr;
        sage_jam_get_live(jam, &live);
        sage_jam_player* player = nullptr;
        CHECK(count_allocations(
                  [&] { CHECK_EQ(sage_jam_player_create(jam, lead, &player), SAGE_OK); }) > 0);
        sage_jam_note notes[16];
        uint8_t bytes[64];
        size_t count = 0, written = 0, sent = 0;
        uint64_t played = 0;
        sage_jam_player_state state{};
        const long during_play = count_allocations([&] {
            for (int64_t t = 0; t < 16 * 2000000; t += 2000) {
                if (t % 500000 == 0) CHECK_EQ(sage_live_note(live, t, 0, 60, 90), SAGE_OK);
                if (t % 500000 == 250000) CHECK_EQ(sage_live_note(live, t, 0, 60, 0), SAGE_OK);
                // The meter changes ahead: 3/4 from bar 2, 4/4 again from bar 5.
                if (t == 1000000) CHECK_EQ(sage_live_set_meter(live, 2, 3), SAGE_OK);
                if (t == 4000000) CHECK_EQ(sage_live_set_meter(live, 5, 4), SAGE_OK);
                if (follow && t % 20000 == 0) {  // 25 pulses a quarter: a clock a bit fast
                    const uint8_t pulse = t == 0 || t == 9000000 ? 0xFA
                                          : t == 6000000         ? 0xFC
                                          : t == 7000000         ? 0xFB
                                                                 : 0xF8;
                    CHECK_EQ(sage_live_midi(live, t, &pulse, 1), SAGE_OK);
                }
                if (t == 16000000) CHECK_EQ(sage_jam_player_input_ended(player, t), SAGE_OK);
                do {
                    CHECK_EQ(
                        sage_jam_player_take_due(player, t, bytes, t % 4000 ? 3 : 64, &written),
                        SAGE_OK);
                    sent += written;
                } while (written > 0);
                do {
                    CHECK_EQ(sage_jam_player_poll(player, t, notes, 16, &count), SAGE_OK);
                    played += count;
                } while (count == 16);
                int64_t wait = 0;
                CHECK_EQ(sage_jam_player_wait(player, t, &wait), SAGE_OK);
                CHECK_EQ(sage_jam_player_get_state(player, &state), SAGE_OK);
                if (state.done) break;
            }
            do {
                CHECK_EQ(sage_jam_player_stop(player, bytes, sizeof bytes, &written), SAGE_OK);
                sent += written;
            } while (written > 0);
        });
        CHECK_EQ(during_play, 0L);
        CHECK(played > 0);
        CHECK(sent >= 2 * played);  // the notes went out (some skipped or released)
        CHECK_EQ(state.done, 1);
        sage_jam_player_free(player);
        sage_jam_free(jam);
    }
    sage_model_free(model);
}

// A session's memory report is its plan (Session::planned_memory, known without a session), and
// creating a session allocates exactly that: every byte it asks operator new for is in the plan.
// An int8 memory holds, per head and slot, a key and a value of d_head int8 and one f32 scale each.
TEST(creating_a_session_allocates_its_planned_memory) {
    for (const auto& path : fixture_models())
        for (auto kind : {sage::KvMemory::F32, sage::KvMemory::Int8}) {
            auto model = sage::Model::load(path);
            sage::SessionOptions options;
            options.kv_memory = kind;
            const sage::MemoryReport plan = sage::Session::planned_memory(*model, options);
            // The packed weights are the model's, made once by its first session on a path that
            // reads them (Model::pack_panels), not the session's.
            if (sage::kernels::reads_panels(sage::kernels::active()))
                model->pack_panels(sage::kernels::active());
            std::unique_ptr<sage::Session> session;
            const unsigned long bytes = sage::testing::count_bytes([&] {
                session = std::make_unique<sage::Session>(*model, options, sage::kernels::active());
            });
            CHECK_EQ(static_cast<uint64_t>(bytes), plan.total_bytes);
            CHECK_EQ(session->memory().total_bytes, plan.total_bytes);
            const uint64_t per_row =
                kind == sage::KvMemory::F32 ? model->config.d_head * 4 : model->config.d_head + 4;
            uint64_t kv = 0;
            for (uint32_t h : model->horizons)
                kv += uint64_t(h) * model->config.n_kv_heads * 2 * per_row;
            CHECK_EQ(plan.kv_bytes, kv);
            CHECK(plan.activation_bytes > 0 && plan.weights_bytes == model->file_bytes);
        }
}

}  // namespace

SAGE_TEST_MAIN()
