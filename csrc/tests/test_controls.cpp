// Musical controls (csrc/engine/controls.h) through the C API: the text parser and the checks, and
// the hard rules holding by construction over 1 000 generated bars with random settings, changed
// between bars, on the tiny fixture model and on the shipped model; the parallels rule's mask and
// penalty against its definition over generated streams.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "engine/controls.h"
#include "engine/detokenizer.h"
#include "engine/grammar.h"
#include "engine/model_file.h"
#include "engine_fixtures.h"
#include "sage_edge/sage_edge.h"
#include "testing.h"

namespace {

using sage::testing::fixture_models;
using sage::testing::load_or_die;

// 1 000 bars of random settings per model in the Release build. The sanitizer build (10x slower)
// runs 100; the aarch64 build, run under qemu where the shipped model is about 50x slower, 100 on
// the tiny models and 20 on the shipped one, and shorter runs of the other shipped-model tests.
#if defined(__aarch64__)
constexpr int kBars = 100, kShippedBars = 20, kShippedScale = 4;
#elif defined(__SANITIZE_ADDRESS__)
constexpr int kBars = 100, kShippedBars = 100, kShippedScale = 1;
#else
constexpr int kBars = 1000, kShippedBars = 1000, kShippedScale = 1;
#endif

sage_status set(sage_controls& c, const char* name, const char* value) {
    return sage_controls_set(&c, name, value);
}

TEST(control_text_parses_into_the_struct) {
    sage_controls c = sage_controls_default();
    CHECK_EQ(set(c, "key", "D:minor"), SAGE_OK);
    CHECK_EQ(c.key_mode, SAGE_RULE_STRICT);
    CHECK_EQ(c.key_tonic, 2);
    // D minor with its raised sixth and seventh: D E F G A Bb B C C#.
    const uint32_t d_minor = (1u << 2) | (1u << 4) | (1u << 5) | (1u << 7) | (1u << 9) |
                             (1u << 10) | (1u << 11) | (1u << 0) | (1u << 1);
    CHECK_EQ(c.key_classes, d_minor);
    CHECK_EQ(set(c, "key-mode", "soft"), SAGE_OK);
    CHECK_EQ(c.key_mode, SAGE_RULE_SOFT);
    CHECK_EQ(set(c, "key", "Bb:0,2,4,7,9"), SAGE_OK);
    CHECK_EQ(c.key_mode, SAGE_RULE_SOFT);  // a key keeps the mode already chosen
    CHECK_EQ(c.key_classes, (1u << 10) | (1u << 0) | (1u << 2) | (1u << 5) | (1u << 7));
    CHECK_EQ(set(c, "range", "usual,52:60-79"), SAGE_OK);
    CHECK_EQ(c.pitch_low[53], 60);
    CHECK_EQ(c.pitch_high[53], 79);
    CHECK_EQ(c.pitch_low[1 + 42], 36);  // cello: C2-A5
    CHECK_EQ(c.pitch_high[1 + 42], 81);
    CHECK_EQ(c.pitch_low[0], 0);  // drums: no range
    CHECK_EQ(set(c, "velocity", "60-100,-1:90"), SAGE_OK);
    CHECK_EQ(c.velocity_low[5], 60);
    CHECK_EQ(c.velocity_high[5], 100);
    CHECK_EQ(c.velocity_low[0], 90);
    CHECK_EQ(c.velocity_high[0], 90);
    CHECK_EQ(set(c, "velocity-scale", "1.25"), SAGE_OK);
    CHECK_EQ(c.velocity_scale, 1.25f);
    CHECK_EQ(set(c, "max-polyphony", "4,42:1"), SAGE_OK);
    CHECK_EQ(c.max_polyphony_total, 4);
    CHECK_EQ(c.max_polyphony[43], 1);
    CHECK_EQ(set(c, "density", "4-12"), SAGE_OK);
    CHECK_EQ(c.density_min, 4);
    CHECK_EQ(c.density_max, 12);
    CHECK_EQ(set(c, "density", "-6"), SAGE_OK);
    CHECK_EQ(c.density_min, 0);
    CHECK_EQ(c.density_max, 6);
    CHECK_EQ(set(c, "no-parallels", "strict"), SAGE_OK);
    CHECK_EQ(c.parallels_mode, SAGE_RULE_STRICT);
    CHECK_EQ(set(c, "plays-after", "2"), SAGE_OK);
    CHECK_EQ(c.plays_after_bars, 2);
    CHECK_EQ(set(c, "end", "cadence"), SAGE_OK);
    CHECK_EQ(c.end, SAGE_END_CADENCE);
    CHECK_EQ(set(c, "key", "off"), SAGE_OK);
    CHECK_EQ(c.key_mode, SAGE_RULE_OFF);
    CHECK_EQ(sage_controls_check(&c), SAGE_OK);
}

TEST(bad_control_text_is_refused_and_changes_nothing) {
    const char* bad[][2] = {
        {"key", "H:major"},
        {"key", "D"},
        {"key", "D:klingon"},
        {"key", "D:0,12"},
        {"key-mode", "hard"},
        {"key-penalty", "0"},
        {"key-penalty", "nan"},
        {"range", "60-"},
        {"range", "52:79-60"},
        {"range", "128:60-70"},
        {"range", "60"},
        {"velocity", "0-128"},
        {"velocity", "x"},
        {"max-polyphony", "-1"},
        {"max-polyphony", "300"},
        {"density", "12-4"},
        {"density", "-"},
        {"density", "4"},
        {"no-parallels", "yes"},
        {"plays-after", "-2"},
        {"end", "fade"},
        {"loudness", "3"},
        {"velocity-scale", "9"},
        {"velocity-scale", "0"},
        {"range", ""},
        {"key", "C#b:major"},
    };
    for (const auto& item : bad) {
        sage_controls c = sage_controls_default();
        const sage_controls before = c;
        CHECK_EQ(set(c, item[0], item[1]), SAGE_ERR_ARGUMENT);
        CHECK(std::string(sage_last_error()).size() > 0);
        CHECK(std::memcmp(&c, &before, sizeof c) == 0);
    }
    sage_controls c = sage_controls_default();
    CHECK_EQ(set(c, "key-mode", "strict"), SAGE_ERR_ARGUMENT);  // no key to lock to
    CHECK_EQ(sage_controls_set(&c, nullptr, "x"), SAGE_ERR_ARGUMENT);
    CHECK_EQ(sage_controls_check(nullptr), SAGE_ERR_ARGUMENT);
    c.pitch_low[3] = 90;
    c.pitch_high[3] = 80;
    CHECK_EQ(sage_controls_check(&c), SAGE_ERR_ARGUMENT);
    c = sage_controls_default();
    c.key_mode = SAGE_RULE_SOFT;  // no pitch class
    CHECK_EQ(sage_controls_check(&c), SAGE_ERR_ARGUMENT);
    c = sage_controls_default();
    c.density_min = 5;
    c.density_max = 4;
    CHECK_EQ(sage_controls_check(&c), SAGE_ERR_ARGUMENT);
    c = sage_controls_default();
    c.parallels_penalty = -1;
    CHECK_EQ(sage_controls_check(&c), SAGE_ERR_ARGUMENT);
}

TEST(every_control_is_described) {
    CHECK(sage_controls_count() >= 12);
    for (size_t i = 0; i < sage_controls_count(); ++i) {
        const char *name = nullptr, *syntax = nullptr, *help = nullptr;
        CHECK_EQ(sage_controls_describe(i, &name, &syntax, &help), SAGE_OK);
        CHECK(name && syntax && help && *name && *help);
    }
    CHECK_EQ(sage_controls_describe(sage_controls_count(), nullptr, nullptr, nullptr),
             SAGE_ERR_ARGUMENT);
}

// A random setting of the hard rules (the soft ones ride along but promise nothing).
sage_controls random_controls(std::mt19937& rng) {
    auto pick = [&](int n) { return static_cast<int>(rng() % uint32_t(n)); };
    sage_controls c = sage_controls_default();
    static const char* const kKeys[] = {"C:major",         "D:minor", "F#:dorian",
                                        "Bb:pentatonic",   "E:blues", "G:mixolydian",
                                        "A:harmonic-minor"};
    if (pick(4) != 0) {
        set(c, "key", kKeys[pick(7)]);
        set(c, "key-mode", pick(4) == 0 ? "soft" : "strict");
    }
    if (pick(2)) set(c, "range", "usual");
    for (int v = 0; v < SAGE_CONTROL_PROGRAMS; ++v) {
        if (pick(3) != 0) continue;
        const int low = 30 + pick(50);
        c.pitch_low[v] = static_cast<uint8_t>(low);
        c.pitch_high[v] = static_cast<uint8_t>(low + 7 + pick(30));
        const int velocity = 1 + pick(100);
        c.velocity_low[v] = static_cast<uint8_t>(velocity);
        c.velocity_high[v] = static_cast<uint8_t>(velocity + pick(27));
        c.max_polyphony[v] = static_cast<uint8_t>(pick(4));
    }
    c.max_polyphony_total = pick(6);
    if (pick(2)) {
        c.density_min = pick(4);
        c.density_max = pick(2) ? c.density_min + 1 + pick(12) : 0;
    }
    c.parallels_mode = pick(3);
    c.plays_after_bars = pick(3);
    CHECK_EQ(sage_controls_check(&c), SAGE_OK);
    return c;
}

struct Played {
    sage_note_event note;
    int setting;  // which controls were in force when it was generated
};

// Whether `velocity` is the one the velocity rule lets through: inside [low, high], or the
// vocabulary's nearest when none is inside.
bool velocity_obeys(int velocity, int low, int high, const std::vector<int>& velocities) {
    auto distance = [&](int v) { return v < low ? low - v : v > high ? v - high : 0; };
    int nearest = 1 << 30;
    for (int v : velocities) nearest = std::min(nearest, distance(v));
    return distance(velocity) == nearest;
}

void hard_controls_hold(const std::string& path, uint32_t seed, int n_bars) {
    sage_model* model = load_or_die(path);
    sage_model_info info{};
    sage_model_get_info(model, &info);
    std::vector<int> velocities;
    for (int32_t id = 0; id < int32_t(info.vocab_size); ++id) {
        uint32_t kind = 0;
        int32_t a = 0;
        sage_model_get_token(model, id, nullptr, &kind, &a, nullptr);
        if (kind == SAGE_KIND_VELOCITY) velocities.push_back(a);
    }
    sage_session_options options = sage_session_options_default();
    options.seed = seed;
    sage_session* session = nullptr;
    CHECK_EQ(sage_session_create(model, &options, &session), SAGE_OK);
    std::mt19937 rng(seed);
    std::vector<sage_controls> settings;
    std::vector<Played> played;
    struct Bar {
        double start, length;
    };
    std::vector<Bar> bars;
    std::vector<int32_t> tokens(SAGE_MAX_TOKENS_PER_BAR * 2);
    std::vector<sage_note_event> events(4096);
    const sage_sampling sampling = sage_sampling_default();
    for (int b = 0; b < n_bars; ++b) {
        if (b % 10 == 0) {  // a knob turned between bars, mid-stream
            settings.push_back(random_controls(rng));
            CHECK_EQ(sage_session_set_controls(session, &settings.back()), SAGE_OK);
        }
        sage_bar_stop stop{};
        stop.bars = 1;
        size_t count = 0;
        sage_stop_reason reason;
        CHECK_EQ(sage_session_generate_bars(session, &sampling, &stop, tokens.data(), tokens.size(),
                                            &count, &reason),
                 SAGE_OK);
        sage_bar bar{};
        sage_session_get_bar(session, &bar);
        bars.push_back({bar.start, 4.0 * bar.numerator / bar.denominator});
        size_t n = 0;
        sage_session_pop_events(session, events.data(), events.size(), &n);
        for (size_t i = 0; i < n; ++i) played.push_back({events[i], int(settings.size()) - 1});
    }
    // The rules were tested on notes: a note a bar at least (random settings can be strict: the
    // shipped model plays 21 notes in the 20 bars of the emulated aarch64 run, 5 441 in 1 000).
    CHECK(played.size() >= static_cast<size_t>(n_bars));
    int checked_polyphony = 0, checked_density = 0;
    for (size_t i = 0; i < played.size(); ++i) {
        const sage_note_event& e = played[i].note;
        const sage_controls& c = settings[played[i].setting];
        const int v = e.program + 1;
        if (e.program >= 0) {
            CHECK(e.pitch >= c.pitch_low[v] && e.pitch <= c.pitch_high[v]);
            if (c.key_mode == SAGE_RULE_STRICT) CHECK(c.key_classes & (1u << (e.pitch % 12)));
        }
        CHECK(velocity_obeys(e.velocity, c.velocity_low[v], c.velocity_high[v], velocities));
        // Polyphony at this note's onset: every note sounding then that was decoded up to it.
        int total = 0, own = 0;
        for (size_t j = 0; j <= i; ++j) {
            const sage_note_event& o = played[j].note;
            if (o.time <= e.time + 1e-9 && e.time + 1e-9 < o.time + o.duration) {
                ++total;
                own += o.program == e.program;
            }
        }
        if (c.max_polyphony_total > 0) CHECK(total <= c.max_polyphony_total);
        if (c.max_polyphony[v] > 0) CHECK(own <= c.max_polyphony[v]);
        checked_polyphony += c.max_polyphony_total > 0 || c.max_polyphony[v] > 0;
    }
    // Density: per bar whose notes were all generated under one setting.
    for (const Bar& bar : bars) {
        int notes = 0, setting = -1;
        bool one_setting = true;
        for (const Played& p : played) {
            if (p.note.time + 1e-9 < bar.start || p.note.time + 1e-9 >= bar.start + bar.length)
                continue;
            ++notes;
            one_setting = one_setting && (setting < 0 || setting == p.setting);
            setting = p.setting;
        }
        if (setting < 0 || !one_setting) continue;
        const sage_controls& c = settings[setting];
        if (c.density_max > 0) CHECK(notes <= c.density_max);
        checked_density += c.density_max > 0;
    }
    if (n_bars >= 100) {  // ten settings or more: some limit polyphony and density
        CHECK(checked_polyphony > 0);
        CHECK(checked_density > 0);
    }
    std::printf("%s: %zu notes in %d bars, %d polyphony and %d density checks\n", path.c_str(),
                played.size(), n_bars, checked_polyphony, checked_density);
    sage_session_free(session);
    sage_model_free(model);
}

TEST(hard_controls_hold_by_construction_on_the_tiny_models) {
    for (const auto& path : fixture_models()) hard_controls_hold(path, 7, kBars);
}

TEST(hard_controls_hold_by_construction_on_the_shipped_model) {
    hard_controls_hold(SAGE_SHIPPED_MODEL, 11, kShippedBars);
}

// A bar below the minimum density is not closed while a note can still be placed: with only the
// minimum set (nothing can block a note), every bar has at least that many notes.
TEST(bars_reach_the_minimum_density) {
    sage_model* model = load_or_die(SAGE_SHIPPED_MODEL);
    sage_session* session = nullptr;
    CHECK_EQ(sage_session_create(model, nullptr, &session), SAGE_OK);
    sage_controls c = sage_controls_default();
    CHECK_EQ(set(c, "density", "9-"), SAGE_OK);
    CHECK_EQ(sage_session_set_controls(session, &c), SAGE_OK);
    const sage_sampling sampling = sage_sampling_default();
    std::vector<int32_t> tokens(SAGE_MAX_TOKENS_PER_BAR * 2);
    std::vector<sage_note_event> events(4096);
    for (int b = 0; b < 20 / kShippedScale; ++b) {
        sage_bar_stop stop{};
        stop.bars = 1;
        size_t count = 0, n = 0;
        sage_stop_reason reason;
        CHECK_EQ(sage_session_generate_bars(session, &sampling, &stop, tokens.data(), tokens.size(),
                                            &count, &reason),
                 SAGE_OK);
        sage_session_pop_events(session, events.data(), events.size(), &n);
        CHECK(n >= 9);
    }
    sage_session_free(session);
    sage_model_free(model);
}

// end = cadence with a key: EOS only in the last bar asked of a piece, and that bar on the tonic
// triad.
TEST(a_cadence_ends_on_the_tonic_triad_in_the_last_bar) {
    sage_model* model = load_or_die(SAGE_SHIPPED_MODEL);
    const uint32_t d_minor_triad = (1u << 2) | (1u << 5) | (1u << 9);  // D F A
    int ended = 0;
    const uint64_t seeds = kShippedScale == 1 ? 6 : 2;
    for (uint64_t seed = 0; seed < seeds; ++seed) {
        sage_session_options options = sage_session_options_default();
        options.seed = seed;
        sage_session* session = nullptr;
        CHECK_EQ(sage_session_create(model, &options, &session), SAGE_OK);
        sage_controls c = sage_controls_default();
        CHECK_EQ(set(c, "key", "D:minor"), SAGE_OK);
        CHECK_EQ(set(c, "end", "cadence"), SAGE_OK);
        CHECK_EQ(sage_session_set_controls(session, &c), SAGE_OK);
        const sage_sampling sampling = sage_sampling_default();
        std::vector<int32_t> tokens(SAGE_MAX_TOKENS_PER_BAR * 8);
        std::vector<sage_note_event> events(4096);
        sage_bar_stop stop{};
        stop.bars = 4;
        stop.each_bar = 1;
        stop.ends_piece = 1;
        sage_stop_reason reason = SAGE_STOP_BAR_LINE;
        size_t count = 0, n = 0;
        std::vector<sage_note_event> before;  // the bar before the last: its notes may sound on
        while (reason == SAGE_STOP_BAR_LINE) {
            CHECK_EQ(sage_session_generate_bars(session, &sampling, &stop, tokens.data(),
                                                tokens.size(), &count, &reason),
                     SAGE_OK);
            if (reason == SAGE_STOP_END) CHECK_EQ(stop.opened, stop.bars);  // only the last bar
            if (reason == SAGE_STOP_BAR_LINE) {
                sage_session_pop_events(session, events.data(), events.size(), &n);
                before.assign(events.begin(), events.begin() + static_cast<std::ptrdiff_t>(n));
            }
        }
        ended += reason == SAGE_STOP_END;
        // What is left is the last bar's notes.
        sage_session_pop_events(session, events.data(), events.size(), &n);
        CHECK(n > 0);
        // A note sounding at time t at or below pitch p: the bar before's held notes and this
        // bar's earlier ones.
        auto covered = [](const sage_note_event* notes, size_t count, double t, int pitch) {
            for (size_t j = 0; j < count; ++j)
                if (notes[j].program >= 0 && notes[j].time <= t + 1e-9 &&
                    t + 1e-9 < notes[j].time + notes[j].duration && notes[j].pitch <= pitch)
                    return true;
            return false;
        };
        for (size_t i = 0; i < n; ++i) {
            const sage_note_event& e = events[i];
            if (e.program < 0) continue;
            CHECK(d_minor_triad & (1u << (e.pitch % 12)));
            // A note below every note sounding at its onset is a D.
            if (!covered(before.data(), before.size(), e.time, e.pitch) &&
                !covered(events.data(), i, e.time, e.pitch))
                CHECK_EQ(e.pitch % 12, 2);
        }
        sage_session_free(session);
    }
    std::printf("%d of %d pieces ended by EOS in the last bar\n", ended, int(seeds));
    sage_model_free(model);
}

// end = cadence without a key: the cadence's key is found once, as the last bar begins, so a
// generation continued over calls of a few tokens draws exactly what one call draws (the last
// bar's own notes would otherwise move the key found mid-bar).
TEST(a_cadence_by_ear_is_the_same_whatever_the_calls) {
    sage_model* model = load_or_die(SAGE_SHIPPED_MODEL);
    const uint64_t seeds = kShippedScale == 1 ? 6 : 2;
    for (uint64_t seed = 0; seed < seeds; ++seed) {
        std::vector<int32_t> runs[2];
        for (size_t chunk : {size_t(1) << 16, size_t(3)}) {
            sage_session_options options = sage_session_options_default();
            options.seed = seed;
            sage_session* session = nullptr;
            CHECK_EQ(sage_session_create(model, &options, &session), SAGE_OK);
            sage_controls c = sage_controls_default();
            CHECK_EQ(set(c, "end", "cadence"), SAGE_OK);
            CHECK_EQ(sage_session_set_controls(session, &c), SAGE_OK);
            const sage_sampling sampling = sage_sampling_default();
            std::vector<int32_t> buffer(chunk);
            std::vector<int32_t>& tokens = runs[chunk == 3];
            sage_bar_stop stop{};
            stop.bars = 3;
            stop.ends_piece = 1;
            sage_stop_reason reason = SAGE_STOP_CAPACITY;
            while (reason == SAGE_STOP_CAPACITY) {
                size_t count = 0;
                CHECK_EQ(sage_session_generate_bars(session, &sampling, &stop, buffer.data(),
                                                    buffer.size(), &count, &reason),
                         SAGE_OK);
                tokens.insert(tokens.end(), buffer.begin(), buffer.begin() + count);
            }
            sage_session_free(session);
        }
        CHECK(runs[0].size() > 20);
        CHECK(runs[0] == runs[1]);
    }
    sage_model_free(model);
}

// The parallels rule by its definition (docs/controls.md), looking at every other voice for the
// pitch: `pitch` in `voice`, with each voice's top line (its highest pitched note sounding) at the
// previous moment in `before` and now in `now` (the pitch joins its own voice's line), moves in
// parallel unisons, octaves or fifths when some other voice moves the same way and the interval
// between the two lines, mod 12, is 0 or 7 at both moments.
bool parallel_by_definition(const std::vector<int>& before, const std::vector<int>& now, int voice,
                            int pitch) {
    const int mine_before = before[voice], mine_now = std::max(pitch, now[voice]);
    if (mine_before < 0 || mine_now == mine_before) return false;
    for (size_t q = 1; q < before.size(); ++q) {
        if (int(q) == voice || before[q] < 0 || now[q] < 0 || now[q] == before[q]) continue;
        if ((now[q] > before[q]) != (mine_now > mine_before)) continue;
        const int interval_before = std::abs(mine_before - before[q]) % 12;
        const int interval_now = std::abs(mine_now - now[q]) % 12;
        if (interval_before == interval_now && (interval_now == 0 || interval_now == 7))
            return true;
    }
    return false;
}

// Replays `stream` through a grammar, a detokenizer and three controls (the CLI's defaults with
// parallels off, soft and strict) and, at each Pitch step, checks that soft lowers by the penalty
// exactly the logits of the pitches the definition finds parallel, and strict masks exactly them
// (unless that would leave no pitch), touching nothing else. Returns how many Pitch steps had a
// parallel pitch.
int check_parallels(const sage::Model& model, const std::vector<int32_t>& stream) {
    const int n_vocab = model.config.vocab_size, tpq = model.config.ticks_per_quarter;
    const sage::TokenInfo* vocab = model.vocab.data();
    sage::Grammar grammar(vocab, n_vocab, tpq);
    sage::Detokenizer detokenizer(vocab, n_vocab, tpq);
    std::vector<sage::Controls> controls(3, sage::Controls(vocab, n_vocab, tpq));
    const int32_t modes[3] = {SAGE_RULE_OFF, SAGE_RULE_SOFT, SAGE_RULE_STRICT};
    sage_controls settings = sage_controls_default();
    for (int k = 0; k < 3; ++k) {
        settings.parallels_mode = modes[k];
        controls[k].set(settings);
    }
    struct Note {
        int64_t onset, end;
        int voice, pitch;
    };
    std::vector<Note> heard;
    std::vector<std::vector<uint8_t>> allowed(3, std::vector<uint8_t>(n_vocab));
    std::vector<std::vector<float>> logits(3, std::vector<float>(n_vocab));
    int with_parallels = 0;
    for (int32_t token : stream) {
        grammar.allowed(allowed[0].data());
        bool pitch_next = false;
        for (int i = 0; i < n_vocab; ++i)
            pitch_next = pitch_next || (allowed[0][i] && vocab[i].kind == sage::Kind::Pitch);
        if (pitch_next) {
            for (int k = 0; k < 3; ++k) {
                allowed[k] = allowed[0];
                for (int i = 0; i < n_vocab; ++i) logits[k][i] = std::sin(float(i + token));
                controls[k].apply(grammar, detokenizer, allowed[k].data(), logits[k].data());
            }
            // The previous moment (the last pitched onset before this note's) and the top lines.
            const int64_t time = detokenizer.onset_ticks();
            int64_t previous = -1;
            for (const Note& h : heard)
                if (h.voice != 0 && h.onset < time) previous = std::max(previous, h.onset);
            std::vector<int> before(SAGE_CONTROL_PROGRAMS, -1), now(SAGE_CONTROL_PROGRAMS, -1);
            for (const Note& h : heard) {
                if (h.voice == 0) continue;
                if (previous >= 0 && h.onset <= previous && previous < h.end)
                    before[h.voice] = std::max(before[h.voice], h.pitch);
                if (h.onset <= time && time < h.end) now[h.voice] = std::max(now[h.voice], h.pitch);
            }
            const int voice = detokenizer.program() + 1;
            std::vector<bool> parallel(n_vocab, false);
            int clean = 0, found = 0;
            for (int i = 0; i < n_vocab; ++i) {
                if (!allowed[0][i] || vocab[i].kind != sage::Kind::Pitch) continue;
                parallel[i] =
                    previous >= 0 && parallel_by_definition(before, now, voice, vocab[i].a);
                found += parallel[i];
                clean += !parallel[i];
            }
            with_parallels += found > 0;
            for (int i = 0; i < n_vocab; ++i) {
                CHECK_EQ(allowed[1][i], allowed[0][i]);  // soft: the same mask, penalties
                const float penalty = parallel[i] ? settings.parallels_penalty : 0.0f;
                CHECK(logits[1][i] == (parallel[i] ? logits[0][i] - penalty : logits[0][i]));
                CHECK_EQ(allowed[2][i], uint8_t(allowed[0][i] && !(parallel[i] && clean > 0)));
                CHECK(logits[2][i] == logits[0][i]);  // strict: a mask, no penalty
            }
        }
        grammar.accept(token);
        sage::NoteEvent note;
        const bool completed = detokenizer.push(token, &note);
        for (sage::Controls& c : controls)
            c.accept(token, detokenizer, completed ? &note : nullptr);
        if (completed && note.program >= 0) {
            const int64_t onset = std::llround(note.time * tpq);
            heard.push_back(
                {onset, onset + std::llround(note.duration * tpq), note.program + 1, note.pitch});
        }
    }
    return with_parallels;
}

// The parallels rule's mask and penalty (computed once per Pitch step from the other voices'
// lines) against its definition, over streams generated with the rule soft (the CLI's default) and
// strict: the shipped model's chorale voices, and a piano with a cello (the piano's chords put a
// pitch under its own voice's top line).
TEST(the_parallels_rule_masks_and_penalises_by_its_definition) {
    sage_model* model = load_or_die(SAGE_SHIPPED_MODEL);
    const std::unique_ptr<sage::Model> table = sage::Model::load(SAGE_SHIPPED_MODEL);
    const std::vector<int32_t> choir = {52, 53, 54, 42}, piano = {0, 42};
    const size_t n_tokens = kShippedScale == 1 && kBars == 1000 ? 3000 : 600;
    for (const std::vector<int32_t>* programs : {&choir, &piano}) {
        for (int32_t mode : {SAGE_RULE_SOFT, SAGE_RULE_STRICT}) {
            sage_session_options options = sage_session_options_default();
            options.seed = 5;
            sage_session* session = nullptr;
            CHECK_EQ(sage_session_create(model, &options, &session), SAGE_OK);
            CHECK_EQ(sage_session_set_programs(session, programs->data(), programs->size()),
                     SAGE_OK);
            sage_controls c = sage_controls_default();
            c.parallels_mode = mode;
            CHECK_EQ(sage_session_set_controls(session, &c), SAGE_OK);
            const sage_sampling sampling = sage_sampling_default();
            std::vector<int32_t> stream(n_tokens);
            CHECK_EQ(sage_session_generate(session, &sampling, stream.data(), stream.size()),
                     SAGE_OK);
            sage_session_free(session);
            const int with_parallels = check_parallels(*table, stream);
            std::printf("%zu programs, parallels %s: %d Pitch steps of %zu tokens had one\n",
                        programs->size(), mode == SAGE_RULE_SOFT ? "soft" : "strict",
                        with_parallels, n_tokens);
            CHECK(with_parallels > 0);  // the rule had something to do
        }
    }
    sage_model_free(model);
}

}  // namespace

SAGE_TEST_MAIN()
