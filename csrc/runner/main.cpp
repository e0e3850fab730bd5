// sage-edge-run: generate music from a .sage model on the command line, through the C API only.
//
// The session starts from one token, the start token: the model's BOS (training wraps every piece
// in BOS ... EOS), found in the vocabulary with sage_model_find_kind; --start-token overrides it.
//
// With --midi-out the notes also go to a MIDI device as they are generated, in real time: the
// runner keeps generation a little ahead of the music (kLookaheadQuarters) and sleeps on the
// monotonic clock until each message is due (see play_midi and sage_midi_scheduler_* in the C API).
#include <poll.h>
#include <sage_edge/sage_edge.h>
#include <sched.h>
#include <signal.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "midi_file.h"
#include "midi_in.h"
#include "midi_out.h"

namespace {

// A printf format: print_usage fills in the engine's sampling defaults and the tempo range.
constexpr const char* kUsage =
    "usage: sage-edge-run --model FILE [--tokens N | --bars N] [options]\n"
    "\n"
    "Generates multi-track music with a .sage model and prints its notes or writes a MIDI file.\n"
    "\n"
    "  --model FILE        the .sage model file (required)\n"
    "  --tokens N          generate N tokens (default 256)\n"
    "  --bars N            generate until N bars are complete\n"
    "  --max-tokens N      with --bars: stop after N tokens anyway (default and most: %d per\n"
    "                      bar asked, plus %d)\n"
    "  --seed S            sampler seed, 0..2^64-1 (default 0); the same seed gives the same\n"
    "                      notes on every machine\n"
    "  --kv-memory KIND    f32 or int8: how the session holds past keys and values (default\n"
    "                      %s; int8 takes about a quarter of the memory)\n"
    "  --temperature T     in 0..3.4e38 (any finite float), 0 = greedy (default %g)\n"
    "  --top-k K           keep the K most likely tokens, 0 = off (default %d)\n"
    "  --top-p P           nucleus sampling, in (0, 1], 1 = off (default %g)\n"
    "  --min-p P           drop tokens below P x the best one's probability, in [0, 1), 0 = off\n"
    "                      (default %g)\n"
    "  --programs LIST     General MIDI programs new notes may use, e.g. 40,41,42 (-1 = drums)\n"
    "  --start-token ID    the token the session starts from (default: the model's BOS)\n"
    "  --tempo BPM         tempo of the MIDI file and of --midi-out, %.6g..%g (the range a MIDI\n"
    "                      file holds; default 120)\n"
    "  --out FILE.mid      write a standard MIDI file (type 1, one track per program)\n"
    "  --midi-out PATH     play the notes in real time as MIDI 1.0 bytes to a serial port, a MIDI\n"
    "                      device (e.g. /dev/snd/midiC1D0) or any file, while generating\n"
    "  --midi-in PATH      play with a musician (docs/jam.md): read MIDI 1.0 bytes from a MIDI\n"
    "                      device, a serial port or a pty and answer or accompany on --midi-out,\n"
    "                      until stopped (or the input ends); --programs are the engine's parts,\n"
    "                      --bars N the bars of a phrase and of an answer (default 4)\n"
    "  --reconnect         with --midi-in: an input that is a character device (a USB MIDI\n"
    "                      device, a serial port, a pty) and ends or is removed is opened again\n"
    "                      when it is back, the jam going on meanwhile (docs/jam.md)\n"
    "  --mode MODE         with --midi-in: call-response (default) or accompany\n"
    "  --rest Q            call-response: a rest of Q quarter notes also ends a phrase (0 = off)\n"
    "  --lookahead N       accompany: the engine plays bar b's parts in bar b + N (default 0:\n"
    "                      in time, each bar as it is played, docs/jam.md); 1 = one bar behind,\n"
    "                      less consonant as heard but with no reaction latency\n"
    "  --listen-ticks N    accompany, lookahead 0: listen again every N grid ticks (default one\n"
    "                      beat, 0 = bar lines only)\n"
    "  --react, --no-react accompany, lookahead 0: wait for the musician's note at a listening\n"
    "                      point (at most half a grid step) and play right after it (default\n"
    "                      on), or decide ahead of it\n"
    "  --predict           accompany, lookahead 0: the model writes the musician's part ahead\n"
    "  --meter N[,B:N...]  with --midi-in: bars of N/4 (default 4), and from bar B on (counted\n"
    "                      from bar 0) bars of that N/4: 4,8:3,12:6 (docs/jam.md)\n"
    "  --clock in|out      with --midi-in: follow the MIDI clock (24 ppqn, Start/Stop/Continue,\n"
    "                      Song Position) on the input, or lead: send clock and Start on the "
    "output\n"
    "  --rt-priority N     with --midi-in or --midi-out: run at real-time priority N (SCHED_FIFO,\n"
    "                      1-99; needs CAP_SYS_NICE or an rtprio limit, docs/jam.md), so that a\n"
    "                      busy host does not keep the runner from a pulse or a due note\n"
    "  --musician-program P  with --midi-in: the musician's program on every channel but 10\n"
    "                      (default 0)\n"
    "  --events            print the notes, one per line: time duration pitch velocity program\n"
    "                      (times in quarter notes; the default when neither --out nor\n"
    "                      --midi-out is given); with --midi-in also the monotonic time (us)\n"
    "                      it was decoded at\n"
    "  --info              print the model, kernel and memory report, then exit\n"
    "  --help              print this help\n"
    "\n"
    "Musical controls (docs/controls.md; the same flags as `sage-edge generate`):\n"
    "%s"
    "\n"
    "Exit status: 0 on success, 2 on a usage error or an unreadable model, 1 on an engine error.\n";

// A usage error: one line on stderr, exit status 2.
struct UsageError {
    std::string message;
};

// An option's value checked by the C API's own rule: the message is the engine's, after the flag.
void check_option(const std::string& flag, sage_status status) {
    if (status != SAGE_OK) throw UsageError{flag + ": " + sage_last_error()};
}

// Bar tokens fed since the session started.
uint64_t bars_fed(const sage_session* session) {
    sage_bar bar;
    return sage_session_get_bar(session, &bar) == SAGE_OK ? bar.index : 0;
}

// The engine's musical controls, one per line: "  --NAME SYNTAX\n      help".
std::string control_lines() {
    std::string text;
    for (size_t i = 0; i < sage_controls_count(); ++i) {
        const char *name, *syntax, *help;
        if (sage_controls_describe(i, &name, &syntax, &help) != SAGE_OK) continue;
        text += std::string("  --") + name + " " + syntax + "\n      " + help + "\n";
    }
    return text;
}

// The control a flag names ("--key" -> "key"), or null.
const char* control_name(const std::string& flag) {
    for (size_t i = 0; i < sage_controls_count(); ++i) {
        const char* name = nullptr;
        if (sage_controls_describe(i, &name, nullptr, nullptr) == SAGE_OK &&
            flag == std::string("--") + name)
            return name;
    }
    return nullptr;
}

void print_usage() {
    const sage_sampling d = sage_sampling_default();
    std::printf(kUsage, SAGE_MAX_TOKENS_PER_BAR, SAGE_MAX_TOKENS_PER_BAR,
                sage_kv_memory_name(sage_session_options_default().kv_memory),
                static_cast<double>(d.temperature), d.top_k, static_cast<double>(d.top_p),
                static_cast<double>(d.min_p), SAGE_TEMPO_MIN_BPM, SAGE_TEMPO_MAX_BPM,
                control_lines().c_str());
}

// The options that take a value, and the switches: parse_args refuses any other.
constexpr const char* kValueOptions[] = {
    "--model",     "--tokens",       "--bars",        "--max-tokens", "--seed",
    "--kv-memory", "--temperature",  "--top-k",       "--top-p",      "--min-p",
    "--programs",  "--start-token",  "--tempo",       "--out",        "--midi-in",
    "--mode",      "--rest",         "--lookahead",   "--meter",      "--musician-program",
    "--clock",     "--listen-ticks", "--rt-priority", "--midi-out"};
constexpr const char* kSwitches[] = {"--events",   "--info",    "--help",     "--react",
                                     "--no-react", "--predict", "--reconnect"};

bool takes_value(const std::string& flag) {
    for (const char* option : kValueOptions)
        if (flag == option) return true;
    return false;
}

std::string option_list() {
    std::string list;
    for (const char* option : kValueOptions) list += std::string(list.empty() ? "" : ", ") + option;
    for (const char* option : kSwitches) list += std::string(", ") + option;
    list += ", and the musical controls";
    return list;
}

// Refuses, before any work, a path that cannot be written: a directory, a missing directory, no
// permission. `what` names the option.
void check_writable(const std::string& what, const std::string& path) {
    struct stat st{};
    if (::stat(path.c_str(), &st) == 0) {
        if (S_ISDIR(st.st_mode)) throw UsageError{what + " " + path + " is a directory"};
        if (::access(path.c_str(), W_OK) != 0)
            throw UsageError{what + " " + path + ": " + std::strerror(errno)};
        return;
    }
    const size_t slash = path.find_last_of('/');
    const std::string directory =
        slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
    if (::stat(directory.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
        throw UsageError{what + " " + path + ": directory " + directory + " does not exist"};
    if (::access(directory.c_str(), W_OK) != 0)
        throw UsageError{what + " " + path + ": cannot create a file in " + directory + ": " +
                         std::strerror(errno)};
}

struct Options {
    std::string model;
    uint64_t tokens = 256;
    uint64_t bars = 0;  // 0: generate `tokens` tokens
    uint64_t max_tokens = 0;
    uint64_t seed = 0;
    uint32_t kv_memory = sage_session_options_default().kv_memory;
    sage_sampling sampling = sage_sampling_default();
    std::vector<int32_t> programs;
    sage_controls controls = sage_controls_default();
    bool controls_given = false;
    int32_t start_token = -1;  // -1: the model's BOS
    double tempo_bpm = 120.0;
    std::string out;
    std::string midi_out;
    std::string midi_in;  // with it: play with a musician (run_jam)
    int32_t mode = SAGE_JAM_CALL_RESPONSE;
    double rest_quarters = 0;
    // Accompaniment's defaults are the C API's: in time, listening every beat, reacting.
    uint32_t lookahead_bars = sage_jam_options_default().lookahead_bars;
    uint32_t listen_ticks = sage_jam_options_default().listen_ticks;
    int32_t react = sage_jam_options_default().react;
    bool predict = false;
    int32_t meter = 4;
    std::vector<std::pair<uint64_t, int32_t>> meter_changes;  // (from bar, quarters)
    int32_t musician_program = 0;
    std::string clock;       // "", "in" (follow) or "out" (lead)
    int rt_priority = 0;     // SCHED_FIFO priority while playing in real time, 0: none
    bool reconnect = false;  // --midi-in: a character device that ends is opened again
    bool events = false;
    bool info = false;
    bool help = false;
};

uint64_t parse_uint(const std::string& flag, const char* text, uint64_t max) {
    errno = 0;
    char* end = nullptr;
    const unsigned long long v = std::strtoull(text, &end, 10);
    if (text[0] == '\0' || text[0] == '-' || text[0] == '+' || *end != '\0' || errno == ERANGE ||
        v > max) {
        throw UsageError{flag + " needs an integer in 0.." + std::to_string(max) + ", got '" +
                         text + "'"};
    }
    return v;
}

double parse_number(const std::string& flag, const char* text) {
    errno = 0;
    char* end = nullptr;
    const double v = std::strtod(text, &end);
    if (text[0] == '\0' || *end != '\0' || errno == ERANGE || v != v) {
        throw UsageError{flag + " needs a number, got '" + text + "'"};
    }
    return v;
}

std::vector<int32_t> parse_programs(const char* text) {
    std::vector<int32_t> programs;
    std::string item;
    const std::string list = std::string(text) + ",";
    for (char c : list) {
        if (c != ',') {
            item += c;
            continue;
        }
        errno = 0;
        char* end = nullptr;
        const long v = std::strtol(item.c_str(), &end, 10);
        if (item.empty() || *end != '\0' || errno == ERANGE || v < -1 || v > 127) {
            throw UsageError{
                "--programs needs a comma-separated list of programs in -1..127, "
                "got '" +
                std::string(text) + "'"};
        }
        programs.push_back(static_cast<int32_t>(v));
        item.clear();
    }
    return programs;
}

Options parse_args(int argc, char** argv) {
    Options o;
    bool tokens_given = false;
    for (int i = 1; i < argc; ++i) {
        const std::string flag = argv[i];
        if (flag == "--help" || flag == "-h") {
            o.help = true;
            return o;
        }
        if (flag == "--events") {
            o.events = true;
            continue;
        }
        if (flag == "--info") {
            o.info = true;
            continue;
        }
        if (flag == "--react" || flag == "--no-react") {
            o.react = flag == "--react" ? 1 : 0;
            continue;
        }
        if (flag == "--predict") {
            o.predict = true;
            continue;
        }
        if (flag == "--reconnect") {
            o.reconnect = true;
            continue;
        }
        if (flag.rfind("--", 0) != 0) throw UsageError{"unexpected argument '" + flag + "'"};
        if (const char* control = control_name(flag)) {  // parsed and checked by the C API
            if (i + 1 >= argc) throw UsageError{flag + " needs a value"};
            // The engine's message names the control.
            if (sage_controls_set(&o.controls, control, argv[++i]) != SAGE_OK)
                throw UsageError{sage_last_error()};
            o.controls_given = true;
            continue;
        }
        if (!takes_value(flag))
            throw UsageError{"unknown option '" + flag + "'; the options are " + option_list() +
                             " (see --help)"};
        if (i + 1 >= argc) throw UsageError{flag + " needs a value"};
        const char* value = argv[++i];
        if (flag == "--model") {
            o.model = value;
        } else if (flag == "--tokens") {
            o.tokens = parse_uint(flag, value, UINT64_MAX);
            tokens_given = true;
        } else if (flag == "--bars") {
            o.bars = parse_uint(flag, value, 1u << 30);
            if (o.bars == 0) throw UsageError{"--bars must be at least 1"};
        } else if (flag == "--max-tokens") {
            o.max_tokens = parse_uint(flag, value, UINT64_MAX);
        } else if (flag == "--seed") {
            o.seed = parse_uint(flag, value, UINT64_MAX);
        } else if (flag == "--kv-memory") {
            check_option(flag, sage_kv_memory_parse(value, &o.kv_memory));
        } else if (flag == "--temperature") {
            o.sampling.temperature = static_cast<float>(parse_number(flag, value));
            check_option(flag, sage_sampling_check(&o.sampling));
        } else if (flag == "--top-k") {
            o.sampling.top_k = static_cast<int32_t>(parse_uint(flag, value, INT32_MAX));
        } else if (flag == "--top-p") {
            o.sampling.top_p = static_cast<float>(parse_number(flag, value));
            check_option(flag, sage_sampling_check(&o.sampling));
        } else if (flag == "--min-p") {
            o.sampling.min_p = static_cast<float>(parse_number(flag, value));
            check_option(flag, sage_sampling_check(&o.sampling));
        } else if (flag == "--programs") {
            o.programs = parse_programs(value);
        } else if (flag == "--start-token") {
            o.start_token = static_cast<int32_t>(parse_uint(flag, value, INT32_MAX));
        } else if (flag == "--tempo") {
            o.tempo_bpm = parse_number(flag, value);
            check_option(flag, sage_tempo_check(o.tempo_bpm));
        } else if (flag == "--out") {
            o.out = value;
        } else if (flag == "--midi-in") {
            o.midi_in = value;
        } else if (flag == "--mode") {
            const std::string mode = value;
            if (mode != "call-response" && mode != "accompany")
                throw UsageError{"--mode must be call-response or accompany, got '" + mode + "'"};
            o.mode = mode == "accompany" ? SAGE_JAM_ACCOMPANY : SAGE_JAM_CALL_RESPONSE;
        } else if (flag == "--rest") {
            o.rest_quarters = parse_number(flag, value);
        } else if (flag == "--lookahead") {
            o.lookahead_bars = static_cast<uint32_t>(parse_uint(flag, value, UINT32_MAX));
        } else if (flag == "--listen-ticks") {
            o.listen_ticks = static_cast<uint32_t>(parse_uint(flag, value, UINT32_MAX));
        } else if (flag == "--meter") {
            // N, then B:N items; the C API checks each meter against the model.
            const std::string text = value;
            size_t at = 0;
            for (bool first = true; at <= text.size(); first = false) {
                const size_t comma = std::min(text.find(',', at), text.size());
                const std::string item = text.substr(at, comma - at);
                const size_t colon = item.find(':');
                if (first != (colon == std::string::npos))
                    throw UsageError{"--meter needs N then BAR:N items (4,8:3), got '" + text +
                                     "'"};
                const int32_t quarters = static_cast<int32_t>(
                    parse_uint(flag, first ? item.c_str() : item.c_str() + colon + 1, INT32_MAX));
                if (first)
                    o.meter = quarters;
                else
                    o.meter_changes.emplace_back(
                        parse_uint(flag, item.substr(0, colon).c_str(), UINT32_MAX), quarters);
                at = comma + 1;
            }
        } else if (flag == "--clock") {
            o.clock = value;
            if (o.clock != "in" && o.clock != "out")
                throw UsageError{"--clock must be in or out, got '" + o.clock + "'"};
        } else if (flag == "--rt-priority") {
            o.rt_priority = static_cast<int>(parse_uint(flag, value, 99));
        } else if (flag == "--musician-program") {
            const std::vector<int32_t> p = parse_programs(value);
            if (p.size() != 1) throw UsageError{"--musician-program needs one program"};
            o.musician_program = p[0];
        } else {  // --midi-out, the last of kValueOptions
            o.midi_out = value;
        }
    }
    if (o.model.empty()) throw UsageError{"--model FILE is required (see --help)"};
    if (o.rt_priority > 0 && o.midi_in.empty() && o.midi_out.empty())
        throw UsageError{"--rt-priority applies to --midi-in or --midi-out"};
    if (o.reconnect && o.midi_in.empty()) throw UsageError{"--reconnect applies to --midi-in"};
    if (!o.midi_in.empty()) {
        if (o.midi_out.empty()) throw UsageError{"--midi-in needs --midi-out (see --help)"};
        if (o.programs.empty())
            throw UsageError{"--midi-in needs --programs: the parts the engine plays"};
        if (tokens_given || !o.out.empty())
            throw UsageError{"--midi-in plays live: --tokens and --out do not apply"};
        if (o.bars == 0) o.bars = 4;
        return o;
    }
    if (!o.out.empty()) check_writable("--out", o.out);
    if (tokens_given && o.bars > 0) throw UsageError{"give --tokens or --bars, not both"};
    // The engine's own cap (sage_session_generate_bars) bounds --max-tokens.
    const uint64_t engine_cap = SAGE_MAX_TOKENS_PER_BAR * (o.bars + 1);
    if (o.bars > 0 && (o.max_tokens == 0 || o.max_tokens > engine_cap)) o.max_tokens = engine_cap;
    if (o.out.empty() && o.midi_out.empty()) o.events = true;
    return o;
}

// An engine call that failed: the C API's message, exit status 1.
struct EngineError {
    std::string message;
};

void check(sage_status status, const char* what) {
    if (status != SAGE_OK) {
        throw EngineError{std::string(what) + ": " + sage_status_string(status) + ": " +
                          sage_last_error()};
    }
}

// The engine's MIDI scheduler (sage_midi_scheduler_*): notes in, MIDI messages out when due.
class Scheduler {
  public:
    explicit Scheduler(size_t notes) { check(sage_midi_scheduler_create(notes, &s_), "MIDI out"); }
    Scheduler(const Scheduler&) = delete;
    Scheduler& operator=(const Scheduler&) = delete;
    ~Scheduler() { sage_midi_scheduler_free(s_); }
    sage_midi_scheduler* get() { return s_; }
    sage_midi_scheduler_state state() const {
        sage_midi_scheduler_state st{};
        check(sage_midi_scheduler_get_state(s_, &st), "MIDI out");
        return st;
    }
    bool empty() const { return state().queued == 0; }
    double next_time() const { return state().next_time; }  // only when !empty()
    size_t free_notes() const { return state().free_notes; }
    // A note on `channel`, or by default on the channel of its program (sage_midi_scheduler's
    // rule); false when full.
    bool add(double time, double end, int32_t pitch, int32_t velocity, int32_t program,
             int32_t channel = SAGE_MIDI_CHANNEL_AUTO) {
        if (free_notes() == 0) return false;
        const sage_midi_note note{time, end, pitch, velocity, program, channel};
        check(sage_midi_scheduler_add(s_, &note), "MIDI out");
        return true;
    }

  private:
    sage_midi_scheduler* s_ = nullptr;
};

// Sends what a sage_midi_scheduler_* call writes (call(bytes, capacity, &written)), calling it
// again while it writes any.
template <typename Call>
void send_all(sage::runner::MidiOut& out, Call&& call) {
    uint8_t bytes[256];
    size_t n = 0;
    std::string error;
    do {
        check(call(bytes, sizeof bytes, &n), "MIDI out");
        if (n > 0 && !out.write(bytes, n, &error)) throw EngineError{error};
    } while (n > 0);
}

// How the jam plays, its defaults resolved by the engine (sage_jam_get_options), for stderr.
std::string way_of_playing(const sage_jam* jam) {
    sage_jam_options o{};
    check(sage_jam_get_options(jam, &o), "jam options");
    if (o.mode != SAGE_JAM_ACCOMPANY) return "answering";
    if (o.lookahead_bars > 0)
        return "accompanying " + std::to_string(o.lookahead_bars) + " bar(s) behind";
    std::string way = "accompanying in time, listening ";
    way +=
        o.listen_ticks > 0 ? "every " + std::to_string(o.listen_ticks) + " ticks" : "at bar lines";
    way += o.react ? ", reacting" : ", deciding ahead";
    return way + (o.predict ? ", predicting" : "");
}

// The programs the model learned, with their notes in the training data; empty when the file does
// not record them (then nothing is checked).
struct LearnedPrograms {
    int32_t programs[SAGE_MAX_LEARNED_PROGRAMS];
    uint64_t notes[SAGE_MAX_LEARNED_PROGRAMS];
    size_t count = 0;

    bool has(int32_t program) const {
        return std::find(programs, programs + count, program) != programs + count;
    }
};

LearnedPrograms learned_programs(const sage_model* model) {
    LearnedPrograms learned;
    check(sage_model_get_learned_programs(model, learned.programs, learned.notes,
                                          SAGE_MAX_LEARNED_PROGRAMS, &learned.count),
          "learned programs");
    learned.count = std::min<size_t>(learned.count, SAGE_MAX_LEARNED_PROGRAMS);
    return learned;
}

std::string program_name(int32_t program) {
    return program < 0 ? "-1 (drums)" : std::to_string(program);
}

std::string program_list(const std::vector<int32_t>& programs) {
    std::string text;
    for (int32_t p : programs) text += (text.empty() ? "" : ", ") + program_name(p);
    return text;
}

// An error names the learned programs one by one up to this many, and sums up more (brief).
constexpr size_t kBriefLearned = 12;

std::string learned_list(const LearnedPrograms& learned, bool brief = false) {
    if (brief && learned.count > kBriefLearned) {
        bool family[16] = {}, drums = false;
        for (size_t i = 0; i < learned.count; ++i) {
            if (learned.programs[i] < 0)
                drums = true;
            else
                family[learned.programs[i] / 8] = true;
        }
        return std::to_string(learned.count) + " programs in " +
               std::to_string(std::count(family, family + 16, true)) +
               " of the 16 General MIDI families and " + (drums ? "the drums" : "no drums") +
               " (--info lists them)";
    }
    std::string text;
    for (size_t i = 0; i < learned.count; ++i)
        text += (i ? ", " : "") + program_name(learned.programs[i]) + " (" +
                std::to_string(learned.notes[i]) + " notes)";
    return text;
}

// A requested program the model never learned would get no notes: refused before generating.
void refuse_unlearned_programs(const std::vector<int32_t>& requested,
                               const LearnedPrograms& learned) {
    std::vector<int32_t> unlearned;
    for (int32_t p : requested)
        if (learned.count > 0 && !learned.has(p)) unlearned.push_back(p);
    if (!unlearned.empty())
        throw UsageError{"--programs: this model cannot play program " + program_list(unlearned) +
                         ": its training data had none of its notes; it learned " +
                         learned_list(learned, true)};
}

void print_info(const Options& o, const sage_model* model, const sage_session* session) {
    sage_model_info info;
    check(sage_model_get_info(model, &info), "model info");
    std::vector<uint32_t> horizons(info.n_layers);
    check(sage_model_get_horizons(model, horizons.data(), horizons.size()), "model horizons");
    sage_memory memory;
    check(sage_session_get_memory(session, &memory), "session memory");
    std::printf("model            %s\n", o.model.c_str());
    std::printf("sage-edge        %s\n", sage_version());
    std::printf("kernel           %s (cpu: %s)\n", sage_kernel_name(), sage_cpu_features());
    std::printf("vocab_size       %" PRIu32 "\n", info.vocab_size);
    std::printf("layers           %" PRIu32 "\n", info.n_layers);
    std::printf("d_model          %" PRIu32 "\n", info.d_model);
    std::printf("heads            %" PRIu32 " query, %" PRIu32 " key/value, d_head %" PRIu32 "\n",
                info.n_heads, info.n_kv_heads, info.d_head);
    std::printf("d_ff             %" PRIu32 "\n", info.d_ff);
    std::printf("attention        %s (%" PRIu32 " families)\n", sage_attention_name(info.attention),
                info.n_families);
    std::printf("weights          %s, %" PRIu64 " parameters, %" PRIu64 " bytes\n",
                sage_quant_name(info.quant), info.parameters, info.file_bytes);
    std::printf("ticks/quarter    %" PRIu32 "\n", info.ticks_per_quarter);
    std::printf("horizons        ");
    for (uint32_t h : horizons) std::printf(" %" PRIu32, h);
    std::printf(" (budget %" PRIu64 " tokens)\n", info.budget);
    std::printf("session memory   %" PRIu64 " bytes: activations %" PRIu64 ", key/value %" PRIu64
                " (%s)\n",
                memory.total_bytes, memory.activation_bytes, memory.kv_bytes,
                sage_kv_memory_name(o.kv_memory));
    const LearnedPrograms learned = learned_programs(model);
    std::printf("learned programs %s\n",
                learned.count ? learned_list(learned).c_str() : "unknown (not in the file)");
    std::printf("controls\n%s", control_lines().c_str());
}

// Moves the session's finished notes into `notes`.
void drain_events(sage_session* session, std::vector<sage_note_event>& notes) {
    sage_note_event batch[256];
    size_t count = 0;
    do {
        check(sage_session_pop_events(session, batch, 256, &count), "pop events");
        notes.insert(notes.end(), batch, batch + count);
    } while (count == 256);
}

// The tokens the options ask for (--tokens N, or --bars N up to --max-tokens), generated a few at
// a time so that playback can interleave with generation. --bars goes through the engine's bar
// loop (sage_session_generate_bars), a bar line or a few tokens per call. For --out it keeps the
// bars as the engine decodes them (start and time signature), so the file's bars are the music's.
class Generation {
  public:
    Generation(sage_session* session, const Options& o)
        : session_(session), o_(o), keep_bars_(!o.out.empty()) {
        stop_.bars = o.bars;
        stop_.each_bar = 1;    // return at each bar line, so keep_bar sees every bar
        stop_.ends_piece = 1;  // --bars N is a piece: end = cadence ends it
    }

    bool done() const {
        if (o_.bars == 0) return generated_ >= o_.tokens;
        const bool finished = reason_ != SAGE_STOP_BAR_LINE && reason_ != SAGE_STOP_CAPACITY;
        return finished || generated_ >= o_.max_tokens;
    }

    // Generates up to n more tokens. With --bars the engine stops before the Bar that opens bar
    // bars + 1; that Bar is then fed, closing the last bar: the music ends there.
    void step(uint64_t n) {
        if (o_.bars == 0) {
            for (uint64_t i = 0; i < n && !done(); ++i) {
                check(sage_session_generate(session_, &o_.sampling, nullptr, 1), "generate");
                ++generated_;
                if (keep_bars_) keep_bar();
            }
            return;
        }
        for (uint64_t i = 0; i < n && !done();) {
            const size_t capacity = static_cast<size_t>(
                std::min<uint64_t>({n - i, o_.max_tokens - generated_, kStepTokens}));
            size_t count = 0;
            sage_stop_reason reason = SAGE_STOP_CAPACITY;
            check(sage_session_generate_bars(session_, &o_.sampling, &stop_, tokens_, capacity,
                                             &count, &reason),
                  "generate bars");
            i += count;
            generated_ += count;
            if (keep_bars_) keep_bar();
            if (reason == SAGE_STOP_BARS) {
                check(sage_session_generate(session_, &o_.sampling, nullptr, 1), "close the bar");
                ++generated_;
                if (keep_bars_) keep_bar();
            }
            reason_ = reason;
            if (reason == SAGE_STOP_END) end_ = stop_.end;  // EOS in the last bar: it ends there
        }
    }

    uint64_t generated() const { return generated_; }
    // With --bars, whether the piece is complete: its bars generated, or EOS in its last bar
    // (not a token cap).
    bool complete() const {
        return reason_ == SAGE_STOP_BARS || reason_ == SAGE_STOP_TIME || reason_ == SAGE_STOP_END;
    }
    // The bars generated, for --out; with --bars only the o.bars asked for.
    const std::vector<sage_bar>& bars() const { return bars_; }
    // With --bars, where bar o.bars ends in quarters once it is complete; 0 before.
    double end() const { return end_; }

  private:
    static constexpr uint64_t kStepTokens = 64;  // the size of tokens_

    void keep_bar() {
        sage_bar bar;
        check(sage_session_get_bar(session_, &bar), "bar");
        if (bar.index == 0) return;  // nothing opened a bar yet
        if (o_.bars > 0 && bar.index > o_.bars) {
            end_ = bar.start;
        } else if (bars_.empty() || bars_.back().index != bar.index) {
            bars_.push_back(bar);
        } else {
            bars_.back() = bar;  // the bar's TimeSig comes after its Bar
        }
    }

    sage_session* session_;
    const Options& o_;
    const bool keep_bars_;
    sage_bar_stop stop_{};
    int32_t tokens_[kStepTokens];
    sage_stop_reason reason_ = SAGE_STOP_CAPACITY;  // why the last generate_bars call returned
    uint64_t generated_ = 0;
    std::vector<sage_bar> bars_;
    double end_ = 0;
};

// Set by SIGINT/SIGTERM during real-time playback: stop, silence the sounding notes, exit.
volatile sig_atomic_t g_stop = 0;
extern "C" void on_stop_signal(int) {
    g_stop = 1;
}

// Real-time priority for playing (--rt-priority): on a busy host a process woken by a pulse or a
// timer may wait milliseconds for a CPU (docs/jam.md, "Following the pulses in time"). Refused
// without the right to it: a warning, and the runner plays at its normal priority.
void ask_real_time(int priority) {
    if (priority <= 0) return;
    sched_param p{};
    p.sched_priority = priority;
    if (sched_setscheduler(0, SCHED_FIFO, &p) != 0)
        std::fprintf(stderr,
                     "sage-edge-run: warning: real-time priority %d refused (%s): playing at "
                     "normal priority\n",
                     priority, std::strerror(errno));
}

// Sleeps until `deadline` on the monotonic clock; returns early when a stop signal arrives.
void sleep_until(const timespec& deadline) {
    while (!g_stop &&
           clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &deadline, nullptr) == EINTR) {
    }
}

timespec monotonic_now() {
    timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now;
}

timespec add_seconds(timespec t, double seconds) {
    const double whole = std::floor(seconds);
    t.tv_sec += static_cast<time_t>(whole);
    t.tv_nsec += static_cast<long>((seconds - whole) * 1e9);
    if (t.tv_nsec >= 1000000000L) {
        t.tv_sec += 1;
        t.tv_nsec -= 1000000000L;
    }
    return t;
}

double seconds_between(const timespec& a, const timespec& b) {
    return static_cast<double>(b.tv_sec - a.tv_sec) +
           1e-9 * static_cast<double>(b.tv_nsec - a.tv_nsec);
}

// How far generation runs ahead of the music, in quarter notes: a jitter buffer for tokens that
// take longer than others (and for stretches of tokens that finish no note).
constexpr double kLookaheadQuarters = 2.0;
// Sends later than this are counted and reported.
constexpr double kLateSeconds = SAGE_JAM_LATE_US * 1e-6;

// Notes generated per program, to check that every requested program played.
struct ProgramNotes {
    uint64_t count[SAGE_MAX_LEARNED_PROGRAMS] = {};  // index program + 1: drums first
    void add(const sage_note_event& e) {
        if (e.program >= -1 && e.program <= 127) ++count[e.program + 1];
    }
};

struct PlayReport {
    uint64_t late_sends = 0;  // times a batch of due messages went out late
    double worst_late_seconds = 0;
    uint64_t notes = 0;  // notes queued for playing
    ProgramNotes per_program;
    bool stopped = false;
};

// Generates and plays in real time. A message at time t (quarter notes) is sent at
// start + t * 60 / tempo seconds on the monotonic clock, where start is the moment generation
// first got kLookaheadQuarters ahead. A message is final, and may be sent, once a note with a
// later onset has been decoded (or generation is over): onsets never go back in the token stream,
// so nothing generated later can come before it. A due message goes out before the next token is
// generated. Nothing is allocated in the loop unless `notes` keeps every note (--events, --out).
PlayReport play_midi(sage_session* session, const Options& o, Generation& generation,
                     std::vector<sage_note_event>* notes) {
    sage::runner::MidiOut out;
    std::string error;
    if (!out.open(o.midi_out, &error)) throw UsageError{"--midi-out: cannot open " + error};
    struct sigaction action{};
    action.sa_handler = on_stop_signal;  // no SA_RESTART: the sleep returns on a signal
    sigaction(SIGINT, &action, nullptr);
    sigaction(SIGTERM, &action, nullptr);
    ask_real_time(o.rt_priority);

    constexpr size_t kBatch = 64;
    Scheduler scheduler(1365);
    sage_note_event batch[kBatch];
    const double seconds_per_quarter = 60.0 / o.tempo_bpm;
    double decoded_until = 0;  // onset of the last decoded note
    bool started = false;
    timespec start{};
    PlayReport report;

    while (!g_stop) {
        const bool finished = generation.done();
        if (finished && scheduler.empty()) break;
        const bool final =
            !scheduler.empty() && (finished || decoded_until > scheduler.next_time());
        const bool room = scheduler.free_notes() >= kBatch;
        const bool ahead =
            !scheduler.empty() && decoded_until >= scheduler.next_time() + kLookaheadQuarters;
        const timespec deadline =
            add_seconds(start, final ? scheduler.next_time() * seconds_per_quarter : 0);
        const bool due = started && final && seconds_between(deadline, monotonic_now()) >= 0;

        if (!due && !finished && room && !ahead) {
            generation.step(1);
            size_t count = 0;
            do {
                check(sage_session_pop_events(session, batch, kBatch, &count), "pop events");
                for (size_t i = 0; i < count; ++i) {
                    const sage_note_event& e = batch[i];  // room for kBatch notes was checked
                    scheduler.add(e.time, e.time + e.duration, e.pitch, e.velocity, e.program);
                    ++report.notes;
                    report.per_program.add(batch[i]);
                    decoded_until = std::max(decoded_until, batch[i].time);
                    if (notes) notes->push_back(batch[i]);
                }
            } while (count == kBatch && scheduler.free_notes() >= kBatch);
            continue;
        }
        // Sleep until the earliest message is due, then send everything due at that time.
        if (!started) {
            start = monotonic_now();
            started = true;
        }
        const double time = scheduler.next_time();
        const timespec when = add_seconds(start, time * seconds_per_quarter);
        sleep_until(when);
        if (g_stop) break;
        const double late = seconds_between(when, monotonic_now());
        send_all(out, [&](uint8_t* bytes, size_t capacity, size_t* n) {
            return sage_midi_scheduler_take_due(scheduler.get(), time, bytes, capacity, n);
        });
        if (late > kLateSeconds) {
            ++report.late_sends;
            report.worst_late_seconds = std::max(report.worst_late_seconds, late);
        }
    }
    if (g_stop) {
        report.stopped = true;
        send_all(out, [&](uint8_t* bytes, size_t capacity, size_t* n) {
            return sage_midi_scheduler_silence(scheduler.get(), bytes, capacity, n);
        });
    }
    return report;
}

int64_t monotonic_us() {
    const timespec t = monotonic_now();
    return int64_t{t.tv_sec} * 1000000 + t.tv_nsec / 1000;
}

// Plays with a musician (--midi-in): bytes in are stamped with the monotonic clock and given to
// the jam's live encoder; the jam is polled every millisecond (or sooner, when a byte arrives)
// through the engine's jam player, which says what to send when: the notes, and the clock when
// leading. Runs until a signal, or until the input ends and the engine's last answer (or
// accompanied bar) has been played; with --reconnect a character device that ends or is removed
// is lost instead, and opened again every kReopenUs until it is back (docs/jam.md, "When a port
// goes away").
int run_jam(const Options& o) {
    sage_model* model = nullptr;
    if (sage_model_load(o.model.c_str(), &model) != SAGE_OK)
        throw UsageError{std::string("cannot load model: ") + sage_last_error()};
    sage_jam* jam = nullptr;
    struct Cleanup {
        sage_model*& model;
        sage_jam*& jam;
        ~Cleanup() {
            sage_jam_free(jam);
            sage_model_free(model);
        }
    } cleanup{model, jam};
    refuse_unlearned_programs(o.programs, learned_programs(model));

    sage::runner::MidiIn in;
    sage::runner::MidiOut out;
    std::string error;
    if (!in.open(o.midi_in, &error)) throw UsageError{"--midi-in: cannot open " + error};
    if (!out.open(o.midi_out, &error)) throw UsageError{"--midi-out: cannot open " + error};

    sage_jam_options jo = sage_jam_options_default();
    jo.mode = o.mode;
    jo.phrase_bars = static_cast<uint32_t>(std::min<uint64_t>(o.bars, UINT32_MAX));
    jo.rest_quarters = o.rest_quarters;
    jo.lookahead_bars = o.lookahead_bars;
    jo.listen_ticks = o.listen_ticks;
    jo.react = o.react;
    jo.predict = o.predict ? 1 : 0;
    if (o.programs.size() > 16) throw UsageError{"--programs: the engine plays at most 16"};
    std::copy(o.programs.begin(), o.programs.end(), jo.programs);
    jo.n_programs = static_cast<uint32_t>(o.programs.size());
    jo.sampling = o.sampling;
    jo.seed = o.seed;
    jo.live.us_per_quarter = static_cast<uint32_t>(std::llround(60e6 / o.tempo_bpm));
    jo.live.bar_quarters = o.meter;
    for (int c = 0; c < 16; ++c) jo.live.channel_programs[c] = c == 9 ? -1 : o.musician_program;
    const int64_t start = monotonic_us();  // bar 0 starts now (or at the clock's Start)
    jo.live.start_us = start;
    jo.live.follow_clock = o.clock == "in";
    if (sage_jam_create(model, &jo, &jam) != SAGE_OK)
        throw UsageError{std::string("cannot play along: ") + sage_last_error()};
    sage_live* live = nullptr;
    check(sage_jam_get_live(jam, &live), "live encoder");
    if (o.controls_given) check(sage_jam_set_controls(jam, &o.controls), "controls");
    for (const auto& [bar, quarters] : o.meter_changes) {
        if (sage_live_set_meter(live, bar, quarters) != SAGE_OK)
            throw UsageError{std::string("--meter: ") + sage_last_error()};
    }
    // The monotonic clock is the system's: a program beside the runner can play in time with it.
    std::fprintf(stderr,
                 "sage-edge-run: listening on %s: bar 0 at monotonic %" PRId64
                 " us, %d/4 at %g BPM, %s\n",
                 o.midi_in.c_str(), start, o.meter, o.tempo_bpm, way_of_playing(jam).c_str());
    ask_real_time(o.rt_priority);  // after the line above: a front end waits for it first

    struct sigaction action{};
    action.sa_handler = on_stop_signal;
    sigaction(SIGINT, &action, nullptr);
    sigaction(SIGTERM, &action, nullptr);

    // The engine plays the notes: their timing, the clock led or followed, and the end
    // (sage_jam_player_*; docs/jam.md, "Playing the notes").
    sage_jam_player* player = nullptr;
    check(sage_jam_player_create(jam, o.clock == "out", &player), "player");
    const std::unique_ptr<sage_jam_player, void (*)(sage_jam_player*)> player_owner(
        player, sage_jam_player_free);
    sage_jam_note notes[64];
    uint8_t bytes[256];
    uint64_t played = 0;
    sage_model_info info{};
    check(sage_model_get_info(model, &info), "model info");
    const double tpq = info.ticks_per_quarter;
    bool ended = false;  // the input ended
    const bool reconnect = o.reconnect && in.character_device();
    constexpr int64_t kReopenUs = 100000;  // lost: how often the path is opened again
    constexpr sage::runner::AllNotesOff kAllNotesOff;
    int64_t reopen_at = -1;  // lost: when to open the path again
    uint64_t lost = 0, back = 0;
    auto send_due = [&] {
        const int64_t now = monotonic_us();
        send_all(out, [&](uint8_t* b, size_t capacity, size_t* n) {
            return sage_jam_player_take_due(player, now, b, capacity, n);
        });
    };
    sage_jam_player_state state{};
    while (!g_stop) {
        int64_t now = monotonic_us();
        if (!ended && in.fd() < 0 && now >= reopen_at) {  // lost: is it back?
            if (in.reopen()) {
                ++back;
                std::fprintf(stderr, "sage-edge-run: MIDI input %s back\n", o.midi_in.c_str());
            } else {
                reopen_at = now + kReopenUs;
            }
        }
        if (!ended && in.fd() >= 0) {
            ssize_t n;
            while ((n = in.read(bytes, sizeof bytes, &error)) > 0)
                check(sage_live_midi(live, now, bytes, static_cast<size_t>(n)), "MIDI input");
            if (n == sage::runner::MidiIn::kError) throw EngineError{error};
            if ((n == 0 || n == sage::runner::MidiIn::kRemoved) && reconnect) {
                // Lost, not ended: the keys held are released, the jam goes on.
                in.close();
                ++lost;
                reopen_at = now + kReopenUs;
                check(sage_live_midi(live, now, kAllNotesOff.bytes, sizeof kAllNotesOff.bytes),
                      "MIDI input");
                std::fprintf(stderr,
                             "sage-edge-run: MIDI input %s lost: waiting for it to come back\n",
                             o.midi_in.c_str());
            } else if (n == 0 || n == sage::runner::MidiIn::kRemoved) {
                ended = true;  // the musician is done
                check(sage_jam_player_input_ended(player, now), "play");
            }
        }
        send_due();  // first: a pulse just read may make messages due
        size_t count = 0;
        do {
            check(sage_jam_player_poll(player, now, notes, 64, &count), "play");
            played += count;
            for (size_t i = 0; i < count && o.events; ++i) {
                const sage_jam_note& j = notes[i];
                std::printf("%.4f %.4f %d %d %d %" PRId64 "\n", j.tick / tpq,
                            static_cast<double>(j.end_tick - j.tick) / tpq, j.pitch, j.velocity,
                            j.program, monotonic_us());
            }
        } while (count == 64);
        send_due();
        check(sage_jam_player_get_state(player, &state), "play");
        if (state.done) break;
        // Wait for input, the next message or pulse, or the next poll, whichever comes first.
        // Following a clock, messages are due on its pulses, which wake the wait as input. On a
        // busy host the wake-up can wait milliseconds for a CPU: --rt-priority (reading without
        // sleeping before an expected pulse did not help, docs/jam.md "Following the pulses in
        // time").
        int64_t wait_us = 0;
        check(sage_jam_player_wait(player, monotonic_us(), &wait_us), "play");
        if (wait_us > 0) {
            pollfd p{ended ? -1 : in.fd(), POLLIN, 0};  // -1 while lost: the timeout
            const timespec timeout{0, static_cast<long>(wait_us) * 1000};
            ppoll(&p, 1, &timeout, nullptr);
        }
    }
    // The end (done, or a signal): the notes sounding end, and a clock led stops.
    send_all(out, [&](uint8_t* b, size_t capacity, size_t* n) {
        return sage_jam_player_stop(player, b, capacity, n);
    });
    check(sage_jam_player_get_state(player, &state), "play");
    sage_jam_state jam_state{};
    check(sage_jam_get_state(jam, &jam_state), "state");
    sage_live_counts counts{};
    check(sage_live_get_counts(live, &counts), "counts");
    std::fprintf(stderr,
                 "sage-edge-run: heard %" PRIu64 " notes in %" PRIu64 " bars, played %" PRIu64
                 " notes (%" PRIu64 " answers, %" PRIu64 " tokens, kernel %s)\n",
                 counts.notes, counts.bars_taken, played, jam_state.answers, jam_state.tokens,
                 sage_kernel_name());
    if (state.late_sends > 0)
        std::fprintf(stderr,
                     "sage-edge-run: warning: MIDI messages sent more than %.0f ms late %" PRIu64
                     " times (worst %.1f ms)\n",
                     kLateSeconds * 1e3, state.late_sends, state.worst_late_us * 1e-3);
    if (lost > 0)
        std::fprintf(stderr, "sage-edge-run: MIDI input lost %" PRIu64 " times, back %" PRIu64 "\n",
                     lost, back);
    return g_stop ? 130 : 0;
}

int run(const Options& o) {
    sage_model* model = nullptr;
    if (sage_model_load(o.model.c_str(), &model) != SAGE_OK) {
        throw UsageError{std::string("cannot load model: ") + sage_last_error()};
    }
    sage_session* session = nullptr;
    struct Cleanup {
        sage_model*& model;
        sage_session*& session;
        ~Cleanup() {
            sage_session_free(session);
            sage_model_free(model);
        }
    } cleanup{model, session};

    sage_session_options options = sage_session_options_default();
    options.seed = o.seed;
    options.kv_memory = o.kv_memory;
    check(sage_session_create(model, &options, &session), "create session");
    if (o.info) {
        print_info(o, model, session);
        return 0;
    }
    if (!o.programs.empty() &&
        sage_session_set_programs(session, o.programs.data(), o.programs.size()) != SAGE_OK) {
        throw UsageError{std::string("--programs: ") + sage_last_error()};
    }
    const LearnedPrograms learned = learned_programs(model);
    refuse_unlearned_programs(o.programs, learned);
    if (o.controls_given) check(sage_session_set_controls(session, &o.controls), "controls");
    sage_model_info info;
    check(sage_model_get_info(model, &info), "model info");
    int32_t start_token = o.start_token;
    if (start_token == -1) check(sage_model_find_kind(model, SAGE_KIND_BOS, &start_token), "BOS");
    if (start_token < 0 || static_cast<uint32_t>(start_token) >= info.vocab_size) {
        throw UsageError{"--start-token must be below the vocabulary size " +
                         std::to_string(info.vocab_size)};
    }

    const auto started = std::chrono::steady_clock::now();
    check(sage_session_feed(session, &start_token, 1, nullptr, 0), "feed the start token");
    std::vector<sage_note_event> notes;
    Generation generation(session, o);
    PlayReport played;
    if (!o.midi_out.empty()) {
        played = play_midi(session, o, generation, (o.events || !o.out.empty()) ? &notes : nullptr);
    } else {
        // Chunks well below the session's event queue, so no note is dropped.
        while (!generation.done()) {
            generation.step(64);
            drain_events(session, notes);
        }
        for (const sage_note_event& e : notes) played.per_program.add(e);
    }
    // A learned program can still stay silent: an error rather than music without it.
    std::vector<int32_t> silent;
    for (int32_t p : o.programs)
        if (learned.count > 0 && played.per_program.count[p + 1] == 0) silent.push_back(p);
    if (!silent.empty() && !played.stopped)
        throw UsageError{"the model played no notes for program " + program_list(silent) + " in " +
                         std::to_string(generation.generated()) + " tokens (seed " +
                         std::to_string(o.seed) +
                         "): try another seed, more tokens or fewer programs; it learned " +
                         learned_list(learned, true)};
    const uint64_t generated = generation.generated();
    const uint64_t bars = bars_fed(session);
    if (o.bars > 0 && !generation.complete() && !played.stopped) {
        std::fprintf(stderr,
                     "sage-edge-run: warning: stopped at --max-tokens %" PRIu64 " with %" PRIu64
                     " bars\n",
                     o.max_tokens, bars);
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();

    if (o.events) {
        for (const sage_note_event& e : notes) {
            std::printf("%.4f %.4f %d %d %d\n", e.time, e.duration, e.pitch, e.velocity, e.program);
        }
    }
    if (!o.out.empty()) {
        std::string error;
        const sage::runner::MidiTiming timing{o.tempo_bpm, generation.bars(), generation.end()};
        if (!sage::runner::write_midi_file(o.out, notes.data(), notes.size(), timing, &error)) {
            throw UsageError{"cannot write " + error};
        }
    }
    if (o.midi_out.empty()) {
        std::fprintf(stderr,
                     "sage-edge-run: %" PRIu64 " tokens, %" PRIu64
                     " bars, %zu notes in %.3f s "
                     "(%.1f tokens/s, kernel %s)\n",
                     generated, bars, notes.size(), seconds,
                     seconds > 0 ? generated / seconds : 0.0, sage_kernel_name());
    } else {
        std::fprintf(stderr,
                     "sage-edge-run: %" PRIu64 " tokens, %" PRIu64 " bars, %" PRIu64
                     " notes played in %.3f s at %g BPM (kernel %s)\n",
                     generated, bars, played.notes, seconds, o.tempo_bpm, sage_kernel_name());
    }
    uint64_t dropped = 0;
    check(sage_session_get_dropped_events(session, &dropped), "dropped events");
    if (dropped > 0) {
        std::fprintf(stderr, "sage-edge-run: warning: %" PRIu64 " notes dropped\n", dropped);
    }
    if (played.late_sends > 0) {
        std::fprintf(stderr,
                     "sage-edge-run: warning: MIDI messages sent more than %.0f ms late %" PRIu64
                     " times (worst %.1f ms): generation is slower than the music\n",
                     kLateSeconds * 1e3, played.late_sends, played.worst_late_seconds * 1e3);
    }
    if (played.stopped) {
        std::fprintf(stderr, "sage-edge-run: stopped by a signal; sounding notes silenced\n");
        return 130;
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        const Options options = parse_args(argc, argv);
        if (options.help) {
            print_usage();
            return 0;
        }
        return options.midi_in.empty() ? run(options) : run_jam(options);
    } catch (const UsageError& e) {
        std::fprintf(stderr, "sage-edge-run: %s\n", e.message.c_str());
        return 2;
    } catch (const EngineError& e) {
        std::fprintf(stderr, "sage-edge-run: %s\n", e.message.c_str());
        return 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "sage-edge-run: %s\n", e.what());
        return 1;
    }
}
