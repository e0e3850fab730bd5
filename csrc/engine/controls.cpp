#include "controls.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "model_file.h"

namespace sage {

namespace {

constexpr int kDrums = 0;  // the drums' voice (program -1)

// Usual sounding range (lowest, highest MIDI pitch) of each General MIDI family (program / 8),
// from the instruments' orchestration compass; families without a fixed compass take the
// piano's. The corpus's voices and string parts override their family's range (kProgramRanges).
// training/music_theory.py measures range violations against this table; tests/test_controls.py
// checks that the two agree.
constexpr int16_t kFamilyRanges[16][2] = {
    {21, 108},  // piano: A0-C8
    {36, 108},  // chromatic percussion: marimba C2 .. glockenspiel C8
    {24, 96},   // organ: C1-C7
    {40, 88},   // guitar: E2-E6
    {28, 67},   // bass: E1-G4
    {28, 103},  // strings: contrabass E1 .. violin G7
    {28, 103},  // ensemble
    {28, 86},   // brass: tuba .. trumpet D6
    {34, 94},   // reed: bassoon Bb1 .. clarinet Bb6
    {59, 108},  // pipe: flute B3 .. piccolo C8
    {21, 108},  // synth lead
    {21, 108},  // synth pad
    {21, 108},  // synth effects
    {36, 96},   // ethnic
    {21, 108},  // percussive
    {21, 108},  // sound effects
};
constexpr int16_t kProgramRanges[][3] = {
    {52, 60, 81},    // choir aahs = soprano: C4-A5
    {53, 53, 74},    // voice oohs = alto: F3-D5
    {54, 48, 69},    // synth voice = tenor: C3-A4
    {40, 55, 103},   // violin: G3-G7
    {110, 55, 103},  // fiddle (second violin): G3-G7
    {41, 48, 88},    // viola: C3-E6
    {42, 36, 81},    // cello, also the chorales' bass voice: C2-A5
    {43, 28, 67},    // contrabass: E1-G4
};

// Scales as semitones above the tonic. "minor" is the evaluation's (docs/evaluation.md): the
// natural, harmonic and melodic forms together.
struct Scale {
    const char* name;
    uint32_t degrees;  // bit k: k semitones above the tonic
};
constexpr uint32_t bits(std::initializer_list<int> degrees) {
    uint32_t m = 0;
    for (int d : degrees) m |= 1u << d;
    return m;
}
const Scale kScales[] = {
    {"major", bits({0, 2, 4, 5, 7, 9, 11})},
    {"ionian", bits({0, 2, 4, 5, 7, 9, 11})},
    {"minor", bits({0, 2, 3, 5, 7, 8, 9, 10, 11})},
    {"natural-minor", bits({0, 2, 3, 5, 7, 8, 10})},
    {"aeolian", bits({0, 2, 3, 5, 7, 8, 10})},
    {"harmonic-minor", bits({0, 2, 3, 5, 7, 8, 11})},
    {"melodic-minor", bits({0, 2, 3, 5, 7, 9, 11})},
    {"dorian", bits({0, 2, 3, 5, 7, 9, 10})},
    {"phrygian", bits({0, 1, 3, 5, 7, 8, 10})},
    {"lydian", bits({0, 2, 4, 6, 7, 9, 11})},
    {"mixolydian", bits({0, 2, 4, 5, 7, 9, 10})},
    {"locrian", bits({0, 1, 3, 5, 6, 8, 10})},
    {"pentatonic", bits({0, 2, 4, 7, 9})},
    {"minor-pentatonic", bits({0, 3, 5, 7, 10})},
    {"blues", bits({0, 3, 5, 6, 7, 10})},
    {"chromatic", 0xFFFu},
};

struct Description {
    const char* name;
    const char* syntax;
    const char* help;
};
const Description kDescriptions[] = {
    {"key", "TONIC:SCALE", "key lock, e.g. D:minor, F#:dorian, C:0,2,4,7,9 (off = none)"},
    {"key-mode", "off|soft|strict", "strict masks out-of-key pitches, soft penalises them"},
    {"key-penalty", "LOGIT", "soft key lock: subtracted from an out-of-key pitch (1.5)"},
    {"range", "usual|LOW-HIGH|P:LOW-HIGH,...", "pitch range per program; usual = by GM family"},
    {"velocity", "V|LOW-HIGH|P:LOW-HIGH,...", "velocity range (or one velocity) per program"},
    {"velocity-scale", "FACTOR", "the model's velocities x FACTOR, nearest token (1 = off)"},
    {"max-polyphony", "N|P:N,...", "notes sounding at an onset, overall or per program (0 = any)"},
    {"density", "MIN-MAX", "notes per bar, all programs (4-12, 4-, -12)"},
    {"no-parallels", "off|soft|strict",
     "no parallel fifths/octaves between programs' top lines (soft)"},
    {"parallels-penalty", "LOGIT", "soft no-parallels: subtracted from an offending pitch (3)"},
    {"plays-after", "BARS", "a requested program silent this many bars gets a bonus (1; 0 = off)"},
    {"plays-bonus", "LOGIT", "added to a silent requested program's Program token (8)"},
    {"end", "none|cadence", "a piece's last bar on the tonic triad, EOS may end it (cadence)"},
};
constexpr size_t kNumDescriptions = sizeof(kDescriptions) / sizeof(kDescriptions[0]);

[[noreturn]] void refuse(const std::string& message) {
    throw Error(Status::Argument, message);
}

// ---- text parsing: whole tokens only, every number bounded -------------------------------------

std::string trim(const std::string& s) {
    const size_t a = s.find_first_not_of(" \t");
    if (a == std::string::npos) return "";
    return s.substr(a, s.find_last_not_of(" \t") - a + 1);
}

long parse_int(const std::string& text, long low, long high, const char* what) {
    const std::string t = trim(text);
    char* end = nullptr;
    errno = 0;
    const long v = t.empty() ? 0 : std::strtol(t.c_str(), &end, 10);
    if (t.empty() || *end != '\0' || errno != 0 || v < low || v > high)
        refuse(std::string(what) + " must be an integer in " + std::to_string(low) + ".." +
               std::to_string(high) + ", not '" + text + "'");
    return v;
}

float parse_positive(const std::string& text, const char* what) {
    const std::string t = trim(text);
    char* end = nullptr;
    const float v = t.empty() ? 0.0f : std::strtof(t.c_str(), &end);
    if (t.empty() || *end != '\0' || !std::isfinite(v) || !(v > 0))
        refuse(std::string(what) + " must be a finite number > 0, not '" + text + "'");
    return v;
}

int32_t parse_rule(const std::string& text, const char* what) {
    const std::string t = trim(text);
    if (t == "off") return SAGE_RULE_OFF;
    if (t == "soft") return SAGE_RULE_SOFT;
    if (t == "strict") return SAGE_RULE_STRICT;
    refuse(std::string(what) + " must be off, soft or strict, not '" + text + "'");
}

std::vector<std::string> split(const std::string& text, char separator) {
    std::vector<std::string> parts;
    size_t start = 0;
    for (;;) {
        const size_t at = text.find(separator, start);
        parts.push_back(
            text.substr(start, at == std::string::npos ? std::string::npos : at - start));
        if (at == std::string::npos) return parts;
        start = at + 1;
    }
}

// "LOW-HIGH" or "V" (low = high) within 0..127.
void parse_span(const std::string& text, bool single_allowed, int* low, int* high,
                const char* what) {
    const std::string t = trim(text);
    const size_t dash = t.find('-');
    if (dash == std::string::npos) {
        if (!single_allowed) refuse(std::string(what) + " must be LOW-HIGH, not '" + text + "'");
        *low = *high = static_cast<int>(parse_int(t, 0, 127, what));
    } else {
        *low = static_cast<int>(parse_int(t.substr(0, dash), 0, 127, what));
        *high = static_cast<int>(parse_int(t.substr(dash + 1), 0, 127, what));
    }
    if (*low > *high) refuse(std::string(what) + ": low must be <= high in '" + text + "'");
}

// An item of a per-program list: "PROGRAM:VALUE" (voice = program + 1) or "VALUE" (voice -1 =
// every program).
int split_program(const std::string& item, std::string* value, const char* what) {
    const size_t colon = item.find(':');
    if (colon == std::string::npos) {
        *value = item;
        return -1;
    }
    *value = item.substr(colon + 1);
    return static_cast<int>(parse_int(item.substr(0, colon), -1, 127, what)) + 1;
}

int parse_tonic(const std::string& text) {
    static const char* const kNames[] = {"C", "D", "E", "F", "G", "A", "B"};
    static const int kClasses[] = {0, 2, 4, 5, 7, 9, 11};
    const std::string t = trim(text);
    if (t.empty() || t.size() > 2)
        refuse("key: tonic must be a note name (C, C#, Db ... B), not '" + text + "'");
    int tonic = -1;
    for (int i = 0; i < 7; ++i)
        if (std::toupper(static_cast<unsigned char>(t[0])) == kNames[i][0]) tonic = kClasses[i];
    if (tonic < 0 || (t.size() == 2 && t[1] != '#' && t[1] != 'b'))
        refuse("key: tonic must be a note name (C, C#, Db ... B), not '" + text + "'");
    if (t.size() == 2) tonic += t[1] == '#' ? 1 : 11;
    return tonic % 12;
}

void parse_key(sage_controls& c, const std::string& value) {
    if (trim(value) == "off") {
        c.key_mode = SAGE_RULE_OFF;
        c.key_classes = 0;
        return;
    }
    const size_t colon = value.find(':');
    if (colon == std::string::npos)
        refuse("key must be TONIC:SCALE (e.g. D:minor) or off, not '" + value + "'");
    const int tonic = parse_tonic(value.substr(0, colon));
    const std::string scale = trim(value.substr(colon + 1));
    uint32_t degrees = 0;
    for (const Scale& s : kScales)
        if (scale == s.name) degrees = s.degrees;
    if (degrees == 0) {
        if (scale.empty() || !(std::isdigit(static_cast<unsigned char>(scale[0])))) {
            std::string names;
            for (const Scale& s : kScales) names += std::string(names.empty() ? "" : ", ") + s.name;
            refuse("key: unknown scale '" + scale + "' (" + names +
                   ", or semitones above the tonic such as 0,2,4,7,9)");
        }
        for (const std::string& d : split(scale, ','))
            degrees |= 1u << parse_int(d, 0, 11, "key: a scale degree");
    }
    c.key_tonic = tonic;
    c.key_classes = 0;
    for (int d = 0; d < 12; ++d)
        if (degrees & (1u << d)) c.key_classes |= 1u << ((tonic + d) % 12);
    if (c.key_mode == SAGE_RULE_OFF) c.key_mode = SAGE_RULE_STRICT;
}

}  // namespace

// ---- settings -----------------------------------------------------------------------------------

sage_controls Controls::defaults() {
    sage_controls c{};
    c.key_mode = SAGE_RULE_OFF;
    c.key_tonic = 0;
    c.key_classes = 0;
    c.key_penalty = 1.5f;
    for (int v = 0; v < kVoices; ++v) {
        c.pitch_low[v] = c.velocity_low[v] = 0;
        c.pitch_high[v] = c.velocity_high[v] = 127;
        c.max_polyphony[v] = 0;
    }
    c.velocity_scale = 1;
    c.max_polyphony_total = 0;
    c.density_min = c.density_max = 0;
    c.plays_after_bars = 1;
    c.plays_bonus = 8;
    c.parallels_mode = SAGE_RULE_SOFT;
    c.parallels_penalty = 3;
    c.end = SAGE_END_CADENCE;
    return c;
}

void Controls::usual_range(int32_t program, int32_t* low, int32_t* high) {
    if (program < -1 || program > 127)
        refuse("program " + std::to_string(program) + " outside -1..127 (-1 = drums)");
    if (program == -1) {  // the drum map's keys: no range
        *low = 0;
        *high = 127;
        return;
    }
    *low = kFamilyRanges[program / 8][0];
    *high = kFamilyRanges[program / 8][1];
    for (const auto& r : kProgramRanges) {
        if (r[0] == program) {
            *low = r[1];
            *high = r[2];
        }
    }
}

void Controls::check(const sage_controls& c) {
    auto rule = [](int32_t value, const char* name) {
        if (value < SAGE_RULE_OFF || value > SAGE_RULE_STRICT)
            refuse(std::string(name) + " must be 0 (off), 1 (soft) or 2 (strict), not " +
                   std::to_string(value));
    };
    auto positive = [](float value, const char* name) {
        if (!std::isfinite(value) || !(value > 0))
            refuse(std::string(name) + " must be a finite number > 0, not " +
                   std::to_string(value));
    };
    rule(c.key_mode, "key_mode");
    if (c.key_tonic < 0 || c.key_tonic > 11)
        refuse("key_tonic must be in 0..11 (C..B), not " + std::to_string(c.key_tonic));
    if (c.key_classes > 0xFFFu)
        refuse("key_classes must be a 12-bit set of pitch classes, not " +
               std::to_string(c.key_classes));
    if (c.key_mode != SAGE_RULE_OFF && c.key_classes == 0)
        refuse("a key lock needs at least one pitch class (key_classes is empty)");
    positive(c.key_penalty, "key_penalty");
    for (int v = 0; v < kVoices; ++v) {
        const std::string program = std::to_string(v - 1);
        if (c.pitch_low[v] > c.pitch_high[v] || c.pitch_high[v] > 127)
            refuse("pitch range of program " + program + " must satisfy low <= high <= 127, not " +
                   std::to_string(c.pitch_low[v]) + "-" + std::to_string(c.pitch_high[v]));
        if (c.velocity_low[v] > c.velocity_high[v] || c.velocity_high[v] > 127)
            refuse("velocity range of program " + program +
                   " must satisfy low <= high <= 127, not " + std::to_string(c.velocity_low[v]) +
                   "-" + std::to_string(c.velocity_high[v]));
    }
    if (!std::isfinite(c.velocity_scale) || !(c.velocity_scale > 0) || c.velocity_scale > 8)
        refuse("velocity_scale must be in (0, 8] (1 = off), not " +
               std::to_string(c.velocity_scale));
    if (c.max_polyphony_total < 0 || c.max_polyphony_total > 255)
        refuse("max_polyphony_total must be in 0..255 (0 = no limit), not " +
               std::to_string(c.max_polyphony_total));
    if (c.density_min < 0 || c.density_max < 0 || c.density_min > 4096 || c.density_max > 4096)
        refuse("density_min and density_max must be in 0..4096 (0 = no limit), not " +
               std::to_string(c.density_min) + " and " + std::to_string(c.density_max));
    if (c.density_max > 0 && c.density_min > c.density_max)
        refuse("density_min (" + std::to_string(c.density_min) + ") must be <= density_max (" +
               std::to_string(c.density_max) + ")");
    if (c.plays_after_bars < 0 || c.plays_after_bars > 65536)
        refuse("plays_after_bars must be in 0..65536 (0 = off), not " +
               std::to_string(c.plays_after_bars));
    positive(c.plays_bonus, "plays_bonus");
    rule(c.parallels_mode, "parallels_mode");
    positive(c.parallels_penalty, "parallels_penalty");
    if (c.end != SAGE_END_NONE && c.end != SAGE_END_CADENCE)
        refuse("end must be 0 (none) or 1 (cadence), not " + std::to_string(c.end));
}

void Controls::set_text(sage_controls& controls, const char* name_text, const char* value_text) {
    if (name_text == nullptr) refuse("name is null");
    if (value_text == nullptr) refuse("value is null");
    const std::string name = name_text, value = value_text;
    sage_controls c = controls;  // changed only if everything parses
    if (name == "key") {
        parse_key(c, value);
    } else if (name == "key-mode") {
        c.key_mode = parse_rule(value, "key-mode");
        if (c.key_mode != SAGE_RULE_OFF && c.key_classes == 0)
            refuse("key-mode " + value + " needs a key (--key TONIC:SCALE)");
    } else if (name == "key-penalty") {
        c.key_penalty = parse_positive(value, "key-penalty");
    } else if (name == "range" || name == "velocity") {
        const bool range = name == "range";
        for (const std::string& raw : split(value, ',')) {
            const std::string item = trim(raw);
            if (range && item == "usual") {
                for (int v = 0; v < kVoices; ++v) {
                    int32_t low, high;
                    usual_range(v - 1, &low, &high);
                    c.pitch_low[v] = static_cast<uint8_t>(low);
                    c.pitch_high[v] = static_cast<uint8_t>(high);
                }
                continue;
            }
            std::string span;
            const int voice = split_program(item, &span, name_text);
            int low, high;
            parse_span(span, !range, &low, &high, name_text);
            for (int v = 0; v < kVoices; ++v) {
                if (voice >= 0 && v != voice) continue;
                (range ? c.pitch_low : c.velocity_low)[v] = static_cast<uint8_t>(low);
                (range ? c.pitch_high : c.velocity_high)[v] = static_cast<uint8_t>(high);
            }
        }
    } else if (name == "velocity-scale") {
        c.velocity_scale = parse_positive(value, "velocity-scale");
    } else if (name == "max-polyphony") {
        for (const std::string& item : split(value, ',')) {
            std::string count;
            const int voice = split_program(item, &count, "max-polyphony");
            const long n = parse_int(count, 0, 255, "max-polyphony");
            if (voice < 0)
                c.max_polyphony_total = static_cast<int32_t>(n);
            else
                c.max_polyphony[voice] = static_cast<uint8_t>(n);
        }
    } else if (name == "density") {
        const std::string t = trim(value);
        const size_t dash = t.find('-');
        if (dash == std::string::npos || t == "-")
            refuse("density must be MIN-MAX, MIN- or -MAX notes per bar, not '" + value + "'");
        const std::string low = t.substr(0, dash), high = t.substr(dash + 1);
        c.density_min = low.empty() ? 0 : static_cast<int32_t>(parse_int(low, 0, 4096, "density"));
        c.density_max =
            high.empty() ? 0 : static_cast<int32_t>(parse_int(high, 1, 4096, "density"));
    } else if (name == "no-parallels") {
        c.parallels_mode = parse_rule(value, "no-parallels");
    } else if (name == "parallels-penalty") {
        c.parallels_penalty = parse_positive(value, "parallels-penalty");
    } else if (name == "plays-after") {
        c.plays_after_bars = static_cast<int32_t>(parse_int(value, 0, 65536, "plays-after"));
    } else if (name == "plays-bonus") {
        c.plays_bonus = parse_positive(value, "plays-bonus");
    } else if (name == "end") {
        const std::string t = trim(value);
        if (t != "none" && t != "cadence")
            refuse("end must be none or cadence, not '" + value + "'");
        c.end = t == "cadence" ? SAGE_END_CADENCE : SAGE_END_NONE;
    } else {
        std::string names;
        for (const Description& d : kDescriptions)
            names += std::string(names.empty() ? "" : ", ") + d.name;
        refuse("unknown control '" + name + "' (" + names + ")");
    }
    check(c);
    controls = c;
}

size_t Controls::count() {
    return kNumDescriptions;
}

bool Controls::describe(size_t i, const char** name, const char** syntax, const char** help) {
    if (i >= kNumDescriptions) return false;
    if (name) *name = kDescriptions[i].name;
    if (syntax) *syntax = kDescriptions[i].syntax;
    if (help) *help = kDescriptions[i].help;
    return true;
}

// ---- the session's controls ---------------------------------------------------------------------

Controls::Controls(const TokenInfo* vocab, int vocab_size, int ticks_per_quarter)
    : vocab_(vocab),
      vocab_size_(vocab_size),
      ticks_per_quarter_(ticks_per_quarter > 0 ? ticks_per_quarter : 1),
      settings_(defaults()) {
    for (int i = 0; i < vocab_size_; ++i) {
        const TokenInfo& t = vocab_[i];
        if (t.kind == Kind::Pitch && t.a >= 0 && t.a <= 127 &&
            n_pitch_tokens_ < static_cast<int>(pitch_tokens_.size()))
            pitch_tokens_[n_pitch_tokens_++] = static_cast<int16_t>(i);
        if (t.kind == Kind::Velocity &&
            n_velocity_tokens_ < static_cast<int>(velocity_tokens_.size()))
            velocity_tokens_[n_velocity_tokens_++] = static_cast<int16_t>(i);
        if (t.kind == Kind::Program && t.a >= -1 && t.a <= 127) has_program_token_[t.a + 1] = true;
    }
    set(settings_);
    forget();
}

void Controls::set(const sage_controls& controls) {
    check(controls);
    settings_ = controls;
    const sage_controls& c = settings_;
    polyphony_ = c.max_polyphony_total > 0;
    for (uint8_t n : c.max_polyphony) polyphony_ = polyphony_ || n > 0;
    bool narrowed = false;
    for (int v = 0; v < kVoices; ++v)
        narrowed = narrowed || c.pitch_low[v] > 0 || c.pitch_high[v] < 127 ||
                   c.velocity_low[v] > 0 || c.velocity_high[v] < 127;
    biases_ = c.key_mode == SAGE_RULE_SOFT || c.parallels_mode == SAGE_RULE_SOFT ||
              c.plays_after_bars > 0 || c.velocity_scale != 1;
    active_ = biases_ || narrowed || polyphony_ || c.key_mode != SAGE_RULE_OFF ||
              c.parallels_mode != SAGE_RULE_OFF || c.density_min > 0 || c.density_max > 0 ||
              c.end != SAGE_END_NONE;
    // The cadence's triad: tonic, the key's third (major if in the key, else minor), fifth.
    // Without a key it is found when the last bar begins (set_piece_bar).
    if (c.key_mode != SAGE_RULE_OFF)
        set_cadence(c.key_tonic, !((c.key_classes >> ((c.key_tonic + 4) % 12)) & 1));
    else if (final_bar_)
        set_cadence_by_ear();
    else {
        set_cadence(-1, false);
        cadence_bar_ = kNoBar;  // found again when the last bar is next generated
    }
}

void Controls::set_cadence(int tonic, bool minor) {
    cadence_tonic_ = tonic;
    triad_ = 0;
    if (tonic >= 0)
        for (int d : {0, minor ? 3 : 4, 7}) triad_ |= 1u << ((tonic + d) % 12);
    refresh_playable();
}

// Krumhansl & Kessler's probe-tone profiles (Krumhansl 1990, table 2.1), tonic first: the key
// finder of the evaluation (training/music_theory.py find_key), so a cadence ends on the tonic
// the evaluation hears.
static constexpr double kMajorProfile[12] = {6.35, 2.23, 3.48, 2.33, 4.38, 4.09,
                                             2.52, 5.19, 2.39, 3.66, 2.29, 2.88};
static constexpr double kMinorProfile[12] = {6.33, 2.68, 3.52, 5.38, 2.60, 3.53,
                                             2.54, 4.75, 3.98, 2.69, 3.34, 3.17};

// The key (0..11 major, 12..23 minor) whose rotated profile correlates best with the pitch-class
// weights, the first of equals; -1 for silence or equal weights.
static int find_key(const std::array<double, 12>& weights) {
    double mean = 0;
    for (double w : weights) mean += w / 12;
    double spread = 0;
    for (double w : weights) spread += (w - mean) * (w - mean);
    if (spread <= 1e-12) return -1;
    int best = -1;
    double best_score = -2;
    for (int key = 0; key < 24; ++key) {
        const double* profile = key < 12 ? kMajorProfile : kMinorProfile;
        const int tonic = key % 12;
        double profile_mean = 0;
        for (int k = 0; k < 12; ++k) profile_mean += profile[k] / 12;
        double cross = 0, profile_spread = 0;
        for (int pc = 0; pc < 12; ++pc) {
            const double p = profile[(pc - tonic + 12) % 12] - profile_mean;
            cross += (weights[pc] - mean) * p;
            profile_spread += p * p;
        }
        const double score = cross / std::sqrt(spread * profile_spread);
        if (score > best_score) {
            best_score = score;
            best = key;
        }
    }
    return best;
}

void Controls::set_cadence_by_ear() {
    cadence_bar_ = bar_;
    const int key = find_key(chroma_);
    set_cadence(key < 0 ? -1 : key % 12, key >= 12);
}

void Controls::set_piece_bar(bool in_piece, bool final_bar) {
    in_piece_ = in_piece;
    final_bar_ = in_piece && final_bar;
    // The key is found once, as the last bar begins: a generation continued over several calls
    // keeps it, though its own last-bar notes would move the weights.
    if (final_bar && settings_.end == SAGE_END_CADENCE && settings_.key_mode == SAGE_RULE_OFF &&
        cadence_bar_ != bar_)
        set_cadence_by_ear();
}

void Controls::refresh_playable() {
    for (int v = 0; v < kVoices; ++v) {
        playable_[v] = playable_final_[v] = v == kDrums;
        if (v == kDrums) continue;
        for (bool final_bar : {false, true}) {
            bool any = false;
            for (int i = 0; i < n_pitch_tokens_ && !any; ++i)
                any = pitch_fits(v, vocab_[pitch_tokens_[i]].a, final_bar);
            (final_bar ? playable_final_ : playable_)[v] = any;
        }
    }
}

void Controls::forget() {
    n_heard_ = 0;
    moment_ = previous_moment_ = -1;
    bar_ = 0;
    notes_in_bar_ = 0;
    last_played_bar_.fill(0);
    chroma_.fill(0);
    cadence_bar_ = kNoBar;
}

bool Controls::pitch_fits(int voice, int pitch, bool final_bar) const {
    const sage_controls& c = settings_;
    if (voice == kDrums) return true;
    if (pitch < c.pitch_low[voice] || pitch > c.pitch_high[voice]) return false;
    const uint32_t pitch_class = 1u << (pitch % 12);
    if (c.key_mode == SAGE_RULE_STRICT && !(c.key_classes & pitch_class)) return false;
    if (final_bar && c.end == SAGE_END_CADENCE && triad_ != 0 && !(triad_ & pitch_class))
        return false;
    return true;
}

int Controls::sounding(int voice, int64_t time) const {
    int n = 0;
    for (int i = 0; i < n_heard_; ++i) {
        const Heard& h = heard_[i];
        n += h.onset <= time && time < h.end && (voice < 0 || h.voice == voice);
    }
    return n;
}

bool Controls::can_start(int voice, int64_t time, bool density_full) const {
    if (density_full) return false;
    if (!(final_bar_ && settings_.end == SAGE_END_CADENCE ? playable_final_ : playable_)[voice])
        return false;
    if (!polyphony_) return true;
    const sage_controls& c = settings_;
    if (c.max_polyphony_total > 0 && sounding(-1, time) >= c.max_polyphony_total) return false;
    return c.max_polyphony[voice] == 0 || sounding(voice, time) < c.max_polyphony[voice];
}

void Controls::top_lines(int64_t time, std::array<int16_t, kVoices>& lines) const {
    lines.fill(-1);
    for (int i = 0; i < n_heard_; ++i) {
        const Heard& h = heard_[i];
        if (h.voice != kDrums && h.onset <= time && time < h.end)
            lines[h.voice] = std::max(lines[h.voice], h.pitch);
    }
}

// Which top lines of `voice` now (parallel_[pitch]) would move in parallel fifths or octaves (or
// unisons) with another voice from the previous moment, with the lines in line_before_/line_now_:
// built once per Pitch step, from each other voice that sounds at both moments and moves, rather
// than looking at every voice for every pitch.
void Controls::mark_parallels(int voice, int64_t previous) const {
    parallel_.fill(false);
    const int before = line_before_[voice];
    if (previous < 0 || before < 0) return;
    for (int q = 1; q < kVoices; ++q) {
        if (q == voice || line_before_[q] < 0 || line_now_[q] < 0) continue;
        const int moved = line_now_[q] - line_before_[q];
        const int interval = std::abs(before - line_before_[q]) % 12;
        if (moved == 0 || (interval != 0 && interval != 7)) continue;
        // The same interval now, moving the same way: a unison or octave is any pitch of q's pitch
        // class; a fifth is 7 semitones (mod 12) above q's pitch or below it.
        auto mark = [&](int now) {
            if (now != before && (now > before) == (moved > 0)) parallel_[now] = true;
        };
        const int other = line_now_[q];
        if (interval == 0) {
            for (int now = other % 12; now < 128; now += 12) mark(now);
        } else {
            for (int now = other + 7; now < 128; now += 12) mark(now);
            for (int now = other - 7; now >= 0; now -= 12) mark(now);
        }
    }
}

void Controls::apply_pitches(int voice, int64_t time, uint8_t* allowed, float* logits) const {
    const sage_controls& c = settings_;
    const bool parallels = c.parallels_mode != SAGE_RULE_OFF;
    // The previous moment: the last onset before this note's.
    const int64_t previous = time > moment_ ? moment_ : previous_moment_;
    if (parallels) {
        top_lines(previous, line_before_);
        top_lines(time, line_now_);
        mark_parallels(voice, previous);
    }
    // The top line is the highest note: a pitch under the voice's top line now leaves it as it is.
    auto makes_parallel = [&](int pitch) {
        return parallels && parallel_[std::max<int>(pitch, line_now_[voice])];
    };
    // Which of the grammar's pitches the hard rules leave (fits[i], pitch_tokens_[i]'s), and
    // whether parallels would leave any.
    std::array<bool, 128> fits;
    int fitting = 0, clean = 0;
    for (int i = 0; i < n_pitch_tokens_; ++i) {
        const int id = pitch_tokens_[i], pitch = vocab_[id].a;
        fits[i] = allowed[id] && pitch_fits(voice, pitch, final_bar_);
        if (!fits[i]) continue;
        ++fitting;
        clean += !makes_parallel(pitch);
    }
    if (fitting == 0) return;  // a Program the caller fed: nothing fits, the grammar's mask stands
    const bool mask_parallels = c.parallels_mode == SAGE_RULE_STRICT && clean > 0;
    // The cadence's bass: in the last bar, a note below everything sounding is the tonic (if one
    // fits), so the final chord stands on the tonic rather than its third or fifth.
    int below = -1;  // notes under this pitch would be the lowest sounding (-1: no such rule)
    if (ending_here() && triad_ != 0) {
        below = 128;
        for (int i = 0; i < n_heard_; ++i) {
            const Heard& h = heard_[i];
            if (h.voice != kDrums && h.onset <= time && time < h.end)
                below = std::min<int>(below, h.pitch);
        }
        bool tonic_fits = false;  // (final_bar_ holds here: fits[i] is the last bar's)
        for (int i = 0; i < n_pitch_tokens_ && !tonic_fits; ++i) {
            const int pitch = vocab_[pitch_tokens_[i]].a;
            tonic_fits = fits[i] && pitch < below && pitch % 12 == cadence_tonic_;
        }
        if (!tonic_fits) below = -1;  // no tonic under the others here: the rule gives way
    }
    for (int i = 0; i < n_pitch_tokens_; ++i) {
        const int id = pitch_tokens_[i], pitch = vocab_[id].a;
        if (!allowed[id]) continue;
        if (!fits[i] || (pitch < below && pitch % 12 != cadence_tonic_)) {
            allowed[id] = 0;
            continue;
        }
        if (logits != nullptr && c.key_mode == SAGE_RULE_SOFT &&
            !(c.key_classes & (1u << (pitch % 12))))
            logits[id] -= c.key_penalty;
        if (makes_parallel(pitch)) {
            if (mask_parallels)
                allowed[id] = 0;
            else if (logits != nullptr && c.parallels_mode == SAGE_RULE_SOFT)
                logits[id] -= c.parallels_penalty;
        }
    }
}

void Controls::apply_velocities(int voice, uint8_t* allowed, float* logits) const {
    if (settings_.velocity_scale != 1) scale_velocities(allowed, logits);
    const int low = settings_.velocity_low[voice], high = settings_.velocity_high[voice];
    int nearest = 1 << 30;  // distance to the range of the nearest velocity token allowed
    for (int k = 0; k < n_velocity_tokens_; ++k) {
        const int id = velocity_tokens_[k], v = vocab_[id].a;
        if (allowed[id]) nearest = std::min(nearest, v < low ? low - v : v > high ? v - high : 0);
    }
    for (int k = 0; k < n_velocity_tokens_; ++k) {
        const int id = velocity_tokens_[k], v = vocab_[id].a;
        if (allowed[id]) allowed[id] = (v < low ? low - v : v > high ? v - high : 0) == nearest;
    }
}

void Controls::scale_velocities(uint8_t* allowed, float* logits) const {
    // The velocity tokens the grammar allows, and where each one's velocity scales to.
    std::array<int16_t, 128> ids{}, target{};
    std::array<float, 128> moved{};
    int n = 0;
    for (int k = 0; k < n_velocity_tokens_; ++k)
        if (allowed[velocity_tokens_[k]]) ids[n++] = velocity_tokens_[k];
    for (int k = 0; k < n; ++k) {
        const float scaled = static_cast<float>(vocab_[ids[k]].a) * settings_.velocity_scale;
        int best = 0;
        for (int j = 1; j < n; ++j)
            if (std::fabs(static_cast<float>(vocab_[ids[j]].a) - scaled) <
                std::fabs(static_cast<float>(vocab_[ids[best]].a) - scaled))
                best = j;
        target[k] = static_cast<int16_t>(best);
    }
    moved.fill(-INFINITY);
    std::array<bool, 128> reached{};
    for (int k = 0; k < n; ++k) {
        reached[target[k]] = true;
        if (logits != nullptr) moved[target[k]] = std::max(moved[target[k]], logits[ids[k]]);
    }
    for (int j = 0; j < n; ++j) {
        allowed[ids[j]] = reached[j];
        if (logits != nullptr) logits[ids[j]] = moved[j];
    }
}

bool Controls::requested_have_played(const Grammar& grammar) const {
    if (!grammar.restricts_programs()) return true;
    for (int v = 0; v < kVoices; ++v)
        if (has_program_token_[v] && grammar.program_allowed(v - 1) && last_played_bar_[v] == 0)
            return false;
    return true;
}

void Controls::apply(const Grammar& grammar, const Detokenizer& detokenizer, uint8_t* allowed,
                     float* logits) const {
    if (!active_) return;
    const sage_controls& c = settings_;
    const int64_t now = detokenizer.onset_ticks();
    const bool this_bar = detokenizer.bars() == bar_;
    const int32_t notes_in_bar = this_bar ? notes_in_bar_ : 0;
    const bool density_full = c.density_max > 0 && notes_in_bar >= c.density_max;
    const bool cadence = c.end == SAGE_END_CADENCE;
    bool pitch_next = false, velocity_next = false, any_note = false;
    int some_voice = -2;  // whether any allowed program has a pitch left (-2: not looked yet)
    for (int i = 0; i < vocab_size_; ++i) {
        if (!allowed[i]) continue;
        const TokenInfo& t = vocab_[i];
        switch (t.kind) {
            case Kind::Program: {
                const int voice = t.a + 1;
                allowed[i] = can_start(voice, now, density_full);
                if (logits != nullptr && allowed[i] && c.plays_after_bars > 0 &&
                    grammar.restricts_programs() &&
                    detokenizer.bars() >= last_played_bar_[voice] + c.plays_after_bars)
                    logits[i] += c.plays_bonus;
                any_note = any_note || allowed[i];
                break;
            }
            case Kind::Position: {
                // Polyphony depends on the position; the rest does not, so it is looked at once.
                const int64_t time = detokenizer.bar_start_ticks() + t.a;
                bool any = false;
                if (!density_full && (polyphony_ || some_voice == -2)) {
                    for (int v = 0; v < kVoices && !any; ++v)
                        any = has_program_token_[v] && grammar.program_allowed(v - 1) &&
                              can_start(v, time, false);
                    if (!polyphony_) some_voice = any;
                } else if (!density_full) {
                    any = some_voice == 1;
                }
                allowed[i] = any;
                any_note = any_note || any;
                break;
            }
            case Kind::Pitch:
                pitch_next = true;
                break;
            case Kind::Velocity:
                velocity_next = true;
                break;
            case Kind::Eos:
                // A piece ends in its last bar, once its final chord has begun and every program
                // asked for has played.
                if (cadence && in_piece_)
                    allowed[i] = final_bar_ && notes_in_bar > 0 && requested_have_played(grammar);
                break;
            default:
                break;
        }
    }
    const int voice = detokenizer.program() + 1;
    if (pitch_next && voice >= 0 && voice < kVoices) apply_pitches(voice, now, allowed, logits);
    if (velocity_next && voice >= 0 && voice < kVoices) apply_velocities(voice, allowed, logits);
    // A bar below its minimum stays open while a note can still be placed in it.
    if (c.density_min > 0 && notes_in_bar < c.density_min && any_note) {
        for (int i = 0; i < vocab_size_; ++i)
            if (vocab_[i].kind == Kind::Bar) allowed[i] = 0;
    }
}

void Controls::accept(int token, const Detokenizer& detokenizer, const NoteEvent* note) {
    if (token < 0 || token >= vocab_size_) return;
    const Kind kind = vocab_[token].kind;
    if (kind == Kind::Bos || kind == Kind::Eos) {  // a new piece: time starts again at zero
        forget();
        return;
    }
    if (detokenizer.bars() != bar_) {
        bar_ = detokenizer.bars();
        notes_in_bar_ = 0;
    }
    if (note == nullptr) return;
    const int64_t onset = std::llround(note->time * ticks_per_quarter_);
    const int64_t end = onset + std::llround(note->duration * ticks_per_quarter_);
    const int voice = std::clamp(note->program + 1, 0, kVoices - 1);
    const bool pitched = voice != kDrums;
    if (pitched && onset > moment_) {
        previous_moment_ = moment_;
        moment_ = onset;
    }
    // Keep the notes that can still sound at a moment the rules look at (the previous one on).
    const int64_t horizon = std::max<int64_t>(std::min(previous_moment_, onset), 0);
    int kept = 0;
    for (int i = 0; i < n_heard_; ++i)
        if (heard_[i].end > horizon) heard_[kept++] = heard_[i];
    n_heard_ = kept;
    if (n_heard_ == kHeard) {
        // Full (only a model piling up long notes gets here): forget the note that ends first,
        // among the voices without a polyphony limit if there are any, so the limits still hold.
        int first = -1;
        for (int pass = 0; pass < 2 && first < 0; ++pass) {
            for (int i = 0; i < n_heard_; ++i) {
                if (pass == 0 && settings_.max_polyphony[heard_[i].voice] > 0) continue;
                if (first < 0 || heard_[i].end < heard_[first].end) first = i;
            }
        }
        heard_[first] = heard_[--n_heard_];
    }
    heard_[n_heard_++] =
        Heard{onset, end, static_cast<int16_t>(voice), static_cast<int16_t>(note->pitch)};
    if (pitched) chroma_[note->pitch % 12] += note->duration;
    ++notes_in_bar_;
    last_played_bar_[voice] = bar_;
}

}  // namespace sage
