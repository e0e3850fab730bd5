// Reading the metadata JSON of a .sage file strictly (metadata.h). The rules are those of
// docs/format.md, "Metadata JSON", which sage_edge/format.py enforces the same way: UTF-8, strict
// RFC 8259 JSON (no NaN, no trailing commas, no control characters in strings), no object with
// two members of one name (compared after unescaping), nesting at most kMaxMetadataDepth deep.
#include "metadata.h"

#include <set>
#include <string>

#include "model_file.h"

namespace sage {
namespace {

[[noreturn]] void fail(const std::string& message) {
    throw Error(Status::Format, "metadata: " + message);
}

// Strict UTF-8, as Python's decoder: no overlong forms, no surrogates, nothing above U+10FFFF.
void check_utf8(const uint8_t* s, size_t n) {
    for (size_t i = 0; i < n;) {
        const uint8_t c = s[i];
        if (c < 0x80) {
            ++i;
            continue;
        }
        size_t extra = 0;
        uint8_t second_lo = 0x80, second_hi = 0xBF;  // the first continuation byte's range
        if (c >= 0xC2 && c <= 0xDF) {
            extra = 1;
        } else if (c >= 0xE0 && c <= 0xEF) {
            extra = 2;
            if (c == 0xE0) second_lo = 0xA0;  // overlong
            if (c == 0xED) second_hi = 0x9F;  // surrogates
        } else if (c >= 0xF0 && c <= 0xF4) {
            extra = 3;
            if (c == 0xF0) second_lo = 0x90;  // overlong
            if (c == 0xF4) second_hi = 0x8F;  // above U+10FFFF
        } else {
            fail("not UTF-8 (byte " + std::to_string(i) + ")");
        }
        if (extra > n - i - 1) fail("not UTF-8 (truncated character at the end)");
        for (size_t k = 1; k <= extra; ++k) {
            const uint8_t b = s[i + k];
            if (b < (k == 1 ? second_lo : 0x80) || b > (k == 1 ? second_hi : 0xBF))
                fail("not UTF-8 (byte " + std::to_string(i + k) + ")");
        }
        i += extra + 1;
    }
}

void append_utf8(std::string& out, uint32_t cp) {
    // A lone surrogate from a \u escape is kept (as Python keeps it) in the same 3-byte form.
    if (cp < 0x80) {
        out += static_cast<char>(cp);
    } else if (cp < 0x800) {
        out += static_cast<char>(0xC0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out += static_cast<char>(0xE0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
        out += static_cast<char>(0xF0 | (cp >> 18));
        out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    }
}

// A JSON number's value when it is an integer of at most 2^53 in magnitude.
struct Integer {
    bool integral = true;  // no fraction, no exponent
    bool in_range = true;  // |value| <= 2^53
    int64_t value = 0;
};

// A strict JSON reader over text already known to be UTF-8.
class Json {
  public:
    Json(const uint8_t* s, size_t n) : s_(s), n_(n) {}

    void ws() {
        while (pos_ < n_ &&
               (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r'))
            ++pos_;
    }
    bool at_end() const { return pos_ == n_; }
    // The next character after white space, 0 at the end.
    char next() {
        ws();
        return pos_ < n_ ? static_cast<char>(s_[pos_]) : '\0';
    }
    bool consume(char c) {
        if (next() != c) return false;
        ++pos_;
        return true;
    }
    void expect(char c, const std::string& what) {
        if (!consume(c)) fail(what + " (byte " + std::to_string(pos_) + ")");
    }

    // Checks any value; `depth` counts the arrays and objects it is inside.
    void value(int depth) {
        switch (next()) {
            case '{':
                object(depth + 1, [&](const std::string&) { value(depth + 1); });
                break;
            case '[':
                check_depth(depth + 1);
                ++pos_;
                if (consume(']')) break;
                do value(depth + 1);
                while (consume(','));
                expect(']', "expected ',' or ']' in an array");
                break;
            case '"':
                string();
                break;
            case 't':
                literal("true");
                break;
            case 'f':
                literal("false");
                break;
            case 'n':
                literal("null");
                break;
            default:
                number();
        }
    }

    // Reads an object at `depth`, calling member(key) with the reader at each member's value
    // (which member must read).
    template <typename Member>
    void object(int depth, Member&& member) {
        check_depth(depth);
        expect('{', "expected an object");
        std::set<std::string> keys;
        if (consume('}')) return;
        do {
            if (next() != '"') fail("expected a member name (byte " + std::to_string(pos_) + ")");
            std::string key = string();
            expect(':', "expected ':' after a member name");
            if (!keys.insert(key).second) fail("two members named \"" + key + "\" in one object");
            member(key);
        } while (consume(','));
        expect('}', "expected ',' or '}' in an object");
    }

    // A string at the reader, unescaped (UTF-8; lone surrogates of \u escapes kept as such).
    std::string string() {
        expect('"', "expected a string");
        std::string out;
        while (true) {
            if (pos_ >= n_) fail("unterminated string");
            const uint8_t c = s_[pos_++];
            if (c == '"') return out;
            if (c < 0x20)
                fail("control character in a string (byte " + std::to_string(pos_ - 1) + ")");
            if (c != '\\') {
                out += static_cast<char>(c);
                continue;
            }
            if (pos_ >= n_) fail("unterminated string");
            const char e = static_cast<char>(s_[pos_++]);
            switch (e) {
                case '"':
                case '\\':
                case '/':
                    out += e;
                    break;
                case 'b':
                    out += '\b';
                    break;
                case 'f':
                    out += '\f';
                    break;
                case 'n':
                    out += '\n';
                    break;
                case 'r':
                    out += '\r';
                    break;
                case 't':
                    out += '\t';
                    break;
                case 'u': {
                    uint32_t cp = hex4();
                    // A high surrogate escape followed by a low one is one character (as in
                    // Python); anything else keeps the surrogate alone.
                    if (cp >= 0xD800 && cp <= 0xDBFF && n_ - pos_ >= 6 && s_[pos_] == '\\' &&
                        s_[pos_ + 1] == 'u') {
                        const size_t save = pos_;
                        pos_ += 2;
                        const uint32_t low = hex4();
                        if (low >= 0xDC00 && low <= 0xDFFF)
                            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
                        else
                            pos_ = save;
                    }
                    append_utf8(out, cp);
                    break;
                }
                default:
                    fail("bad escape in a string (byte " + std::to_string(pos_ - 1) + ")");
            }
        }
    }

    // A number at the reader: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
    Integer number() {
        Integer result;
        next();
        const size_t start = pos_;
        const bool negative = pos_ < n_ && s_[pos_] == '-';
        if (negative) ++pos_;
        if (!digit()) fail("expected a value (byte " + std::to_string(start) + ")");
        uint64_t magnitude = 0;
        if (s_[pos_] == '0') {
            ++pos_;
        } else {
            while (digit()) {
                magnitude = magnitude * 10 + (s_[pos_++] - '0');
                if (magnitude > (1ull << 53)) {
                    result.in_range = false;
                    magnitude = 0;  // keep reading the digits; the value is unusable
                }
            }
        }
        if (pos_ < n_ && s_[pos_] == '.') {
            ++pos_;
            result.integral = false;
            if (!digit()) fail("expected a digit after '.' (byte " + std::to_string(pos_) + ")");
            while (digit()) ++pos_;
        }
        if (pos_ < n_ && (s_[pos_] == 'e' || s_[pos_] == 'E')) {
            ++pos_;
            result.integral = false;
            if (pos_ < n_ && (s_[pos_] == '+' || s_[pos_] == '-')) ++pos_;
            if (!digit()) fail("expected an exponent (byte " + std::to_string(pos_) + ")");
            while (digit()) ++pos_;
        }
        result.value =
            negative ? -static_cast<int64_t>(magnitude) : static_cast<int64_t>(magnitude);
        return result;
    }

  private:
    bool digit() const { return pos_ < n_ && s_[pos_] >= '0' && s_[pos_] <= '9'; }

    uint32_t hex4() {
        if (n_ - pos_ < 4) fail("truncated \\u escape");
        uint32_t v = 0;
        for (int i = 0; i < 4; ++i) {
            const uint8_t c = s_[pos_++];
            uint32_t d;
            if (c >= '0' && c <= '9')
                d = c - '0';
            else if (c >= 'a' && c <= 'f')
                d = c - 'a' + 10;
            else if (c >= 'A' && c <= 'F')
                d = c - 'A' + 10;
            else
                fail("bad \\u escape (byte " + std::to_string(pos_ - 1) + ")");
            v = v * 16 + d;
        }
        return v;
    }

    void literal(const char* word) {
        for (const char* w = word; *w; ++w) {
            if (pos_ >= n_ || s_[pos_] != static_cast<uint8_t>(*w))
                fail("expected a value (byte " + std::to_string(pos_) + ")");
            ++pos_;
        }
    }

    void check_depth(int depth) const {
        if (depth > kMaxMetadataDepth)
            fail("nested more than " + std::to_string(kMaxMetadataDepth) + " deep");
    }

    const uint8_t* s_;
    size_t n_;
    size_t pos_ = 0;
};

// "learned_programs": [[program, notes], ...], programs ascending in -1..127, notes >= 1.
std::vector<LearnedProgram> read_learned_programs(Json& json) {
    const std::string what = "learned_programs must be a list of [program, notes] pairs";
    std::vector<LearnedProgram> learned;
    json.expect('[', what);
    if (json.consume(']')) fail("learned_programs is empty");
    do {
        json.expect('[', what);
        const Integer program = json.number();
        json.expect(',', what);
        const Integer notes = json.number();
        json.expect(']', what);
        if (!program.integral || !program.in_range || program.value < -1 || program.value > 127)
            fail("learned_programs holds a program outside the integers -1..127");
        if (!notes.integral || !notes.in_range || notes.value < 1 ||
            static_cast<uint64_t>(notes.value) > kMaxLearnedNotes)
            fail("learned_programs holds a note count outside the integers 1..2^53-1");
        if (!learned.empty() && program.value <= learned.back().program)
            fail("learned_programs is not in strictly ascending program order");
        learned.push_back(
            {static_cast<int32_t>(program.value), static_cast<uint64_t>(notes.value)});
    } while (json.consume(','));
    json.expect(']', what);
    return learned;
}

}  // namespace

std::vector<LearnedProgram> read_metadata(const uint8_t* text, size_t size) {
    check_utf8(text, size);
    Json json(text, size);
    if (json.next() != '{') fail("not a JSON object");
    bool tokenizer = false, model = false;
    std::vector<LearnedProgram> learned;
    json.object(1, [&](const std::string& key) {
        if (key == "learned_programs") {
            learned = read_learned_programs(json);
            return;
        }
        if (key == "tokenizer") tokenizer = json.next() == '{';
        if (key == "model") model = json.next() == '{';
        json.value(1);
    });
    json.ws();
    if (!json.at_end()) fail("text after the JSON object");
    if (!tokenizer) fail("no \"tokenizer\" object");
    if (!model) fail("no \"model\" object");
    return learned;
}

}  // namespace sage
