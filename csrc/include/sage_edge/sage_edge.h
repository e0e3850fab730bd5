/* sage-edge C API: load a .sage model, run sessions, sample tokens, read note events.
 *
 * For firmware and instrument code. Every function that takes a model or a session returns a
 * status code and writes its results through pointers; nothing throws across this boundary. When
 * a call fails, sage_last_error() returns a message describing it, for the calling thread. A null
 * model, session or output pointer is an argument error (sage_model_free and sage_session_free
 * accept null, like free). This is the one door to the engine: the command-line runner and the
 * Python module go through it, so every front end checks arguments the same way.
 *
 * Lifetime: a model must outlive every session created from it (free the sessions first).
 *
 * Memory: sage_session_create allocates everything a session will ever use (activations, the
 * per-layer key/value ring buffers, the sampler's scratch, the event queue). Feeding, sampling
 * and reading events allocate nothing, and a decode step costs the same at token 10 and at token
 * 10 000 000.
 *
 * Threads: a session is not synchronised. Never call two functions on one session at the same
 * time from different threads (the caller serialises them, e.g. one session per thread, or a
 * mutex per session); doing so corrupts the session. A model is read-only after loading and may
 * be shared by sessions on any number of threads. (The Python module takes a lock per session,
 * so Python code may share a session between threads: its calls then run one after another.)
 */
#ifndef SAGE_EDGE_H
#define SAGE_EDGE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum sage_status {
    SAGE_OK = 0,
    SAGE_ERR_IO = 1,     /* the file cannot be opened or mapped */
    SAGE_ERR_FORMAT = 2, /* the file is not a valid .sage model (docs/format.md) */
    SAGE_ERR_ARGUMENT =
        3,                /* a bad argument: null pointer, token out of range, bad sampling value */
    SAGE_ERR_MEMORY = 4,  /* an allocation at creation failed */
    SAGE_ERR_KERNEL = 5,  /* SAGE_EDGE_KERNEL names a path this CPU cannot run */
    SAGE_ERR_STATE = 6,   /* the call does not fit the session's state (e.g. feed nothing first) */
    SAGE_ERR_INTERNAL = 7 /* a bug in sage-edge: please report it with sage_last_error() */
} sage_status;

typedef struct sage_model sage_model;
typedef struct sage_session sage_session;

/* Weight storage of a model file's matrices. */
typedef enum sage_quant {
    SAGE_QUANT_F32 = 0, /* 1 was f16, which readers now refuse */
    SAGE_QUANT_Q8_0 = 2,
    SAGE_QUANT_Q4 = 3
} sage_quant;
/* How a session's ring memories hold keys and values: f32, or int8 with one f32 scale per key/value
 * head and position (about a quarter of the bytes; docs/results.md gives its quality against f32).
 */
typedef enum sage_kv_memory { SAGE_KV_F32 = 0, SAGE_KV_INT8 = 1 } sage_kv_memory;
typedef enum sage_attention {
    SAGE_ATTENTION_MHA = 0,
    SAGE_ATTENTION_GQA = 1,
    SAGE_ATTENTION_ASKV = 2
} sage_attention;

/* What a token says (docs/format.md, "Vocabulary"); sage_model_get_token gives a token's kind,
 * its attribute family and its values a and b, whose meaning depends on the kind. */
typedef enum sage_kind {
    SAGE_KIND_PAD = 0,
    SAGE_KIND_BOS = 1, /* start of a piece */
    SAGE_KIND_EOS = 2, /* end of a piece */
    SAGE_KIND_MASK = 3,
    SAGE_KIND_BAR = 4,
    SAGE_KIND_TIMESIG = 5,     /* a = numerator, b = denominator */
    SAGE_KIND_POSITION = 6,    /* a = onset within the bar in ticks */
    SAGE_KIND_TEMPO = 7,       /* a = beats per minute x 1000 */
    SAGE_KIND_PROGRAM = 8,     /* a = General MIDI program, -1 = drums */
    SAGE_KIND_PITCH = 9,       /* a = MIDI pitch */
    SAGE_KIND_PITCH_DRUM = 10, /* a = MIDI drum-map key */
    SAGE_KIND_VELOCITY = 11,   /* a = MIDI velocity */
    SAGE_KIND_DURATION = 12,   /* a = length in ticks */
    SAGE_KIND_OTHER = 13
} sage_kind;

/* The attribute families: with AS-KVHS attention each has its own key/value projection. */
typedef enum sage_family {
    SAGE_FAMILY_SPECIAL = 0, /* PAD, BOS, EOS, MASK, OTHER */
    SAGE_FAMILY_TIME = 1,    /* BAR, TIMESIG, POSITION, TEMPO */
    SAGE_FAMILY_PROGRAM = 2,
    SAGE_FAMILY_PITCH = 3, /* PITCH, PITCH_DRUM */
    SAGE_FAMILY_VELOCITY = 4,
    SAGE_FAMILY_DURATION = 5
} sage_family;

typedef struct sage_model_info {
    uint32_t vocab_size, n_layers, d_model, n_heads, n_kv_heads, d_head, d_ff, n_families;
    uint32_t attention;         /* sage_attention */
    uint32_t quant;             /* sage_quant */
    uint32_t ticks_per_quarter; /* time unit of Position and Duration tokens */
    float norm_eps;             /* the RMSNorm epsilon */
    uint64_t parameters;        /* number of weights */
    uint64_t file_bytes;        /* size of the mapped file */
    uint64_t budget;            /* DSMR budget: sum of the per-layer horizons, in tokens */
} sage_model_info;

typedef struct sage_session_options {
    uint64_t seed;      /* the sampler's seed: the same seed gives the same tokens everywhere */
    uint32_t kv_memory; /* a sage_kv_memory: SAGE_KV_INT8 (default) or SAGE_KV_F32 */
} sage_session_options;

typedef struct sage_sampling {
    float temperature; /* >= 0; 0 = greedy */
    int32_t top_k;     /* >= 0; 0 = off */
    float top_p;       /* in (0, 1]; 1 = off */
    float min_p;       /* in [0, 1); 0 = off */
} sage_sampling;

/* The tempos, in quarter notes per minute, that sage-edge writes and plays. A MIDI file stores a
 * tempo as a 24-bit count of microseconds per quarter note, so 60e6 / 0xFFFFFF = 3.5763 BPM is
 * the slowest it can hold (below it the count wraps); 1000 BPM is the fastest sage-edge accepts.
 * Every front end (sage-edge-run, the Python Engine and CLI) checks tempos against these. */
#define SAGE_TEMPO_MIN_BPM (60e6 / 16777215.0)
#define SAGE_TEMPO_MAX_BPM 1000.0

typedef struct sage_memory {
    uint64_t weights_bytes;    /* the mapped model file */
    uint64_t activation_bytes; /* scratch buffers of the forward pass and the sampler */
    uint64_t kv_bytes;         /* sum_l h_l * G * 2 * d_head * 4 (f32), or * (d_head + 4) (int8;
                                  its keys' d_head and values' h_l rounded up to multiples of 4) */
    uint64_t total_bytes;      /* activation_bytes + kv_bytes + the session's other state */
} sage_memory;

/* The bar the token stream is in, as the engine decodes it: index counts the Bar tokens fed (0
 * before the first), start is where the bar begins in quarter notes from the start, and
 * numerator/denominator is its time signature (the bar's TimeSig token; 4/4 before any). The bar
 * lasts numerator * 4 / denominator quarters; the next Bar starts there. */
typedef struct sage_bar {
    uint64_t index;
    double start;
    int32_t numerator, denominator;
} sage_bar;

/* Bar-counted generation (sage_session_generate_bars): `bars` notated bars, counted at each TimeSig
 * token (at each Bar in a vocabulary without TimeSig). A token bar whose TimeSig is
 * meter_quarters/4 counts as meter_bars notated bars when meter_bars >= 1: a prompt in 3/8 is
 * tokenized in 3/4 bars, each two notated bars, so {3, 2} (docs/data.md, "Meters outside the
 * tokenizer's set"); any other token bar is one. The progress fields start at zero; every call
 * updates them, and calling again with the same struct continues the same generation. */
typedef struct sage_bar_stop {
    uint64_t bars;          /* notated bars to generate, 1..UINT32_MAX */
    int32_t meter_quarters; /* >= 1 when meter_bars >= 1 */
    int32_t meter_bars;     /* >= 0; 0 = every token bar is one notated bar */
    int32_t each_bar;   /* nonzero: also return before each new token bar (SAGE_STOP_BAR_LINE) */
    int32_t ends_piece; /* nonzero: the last bar asked is the piece's end, where end = cadence (the
                           default control) holds it to the tonic triad and lets EOS end it; zero
                           (a stream or a jam generated a bar or a phrase at a time): no ending */
    uint64_t opened;    /* progress: notated bars opened so far (<= bars) */
    uint64_t generated; /* progress: tokens generated so far */
    double end;         /* progress: where notated bar `bars` ends (quarters), once it is open */
} sage_bar_stop;

/* A model that never closes a bar is stopped after SAGE_MAX_TOKENS_PER_BAR * (bars + 1) tokens:
 * the one token cap of every front end. */
#define SAGE_MAX_TOKENS_PER_BAR 2048

/* Why sage_session_generate_bars returned. The first four end the generation. */
typedef enum sage_stop_reason {
    SAGE_STOP_BARS = 0,       /* the bars are complete: the next token, the Bar after them, is
                                 pending (not fed) */
    SAGE_STOP_TIME = 1,       /* the bars are complete inside a token bar that spans several notated
                                 bars: the next token, a Position at or past `end`, is pending */
    SAGE_STOP_END = 2,        /* EOS was generated (and fed): the piece ended */
    SAGE_STOP_MAX_TOKENS = 3, /* SAGE_MAX_TOKENS_PER_BAR * (bars + 1) tokens generated */
    SAGE_STOP_BAR_LINE = 4,   /* each_bar: a token bar is complete; the Bar opening the next one is
                                 pending */
    SAGE_STOP_CAPACITY = 5    /* capacity tokens generated in this call: call again to go on */
} sage_stop_reason;

/* A note decoded from the token stream; times and durations in quarter notes from the start. */
typedef struct sage_note_event {
    double time;
    double duration;
    int32_t pitch;
    int32_t velocity;
    int32_t program; /* General MIDI program 0..127, -1 for drums */
} sage_note_event;

/* Musical controls (docs/controls.md): constraints on the next token, applied where the grammar
 * mask is applied, so that what they forbid is never sampled. A strict rule masks tokens, a soft
 * one subtracts a logit penalty (or adds a bonus); OFF leaves the model alone. Per-program arrays
 * are indexed by program + 1: [0] is the drums (program -1), [1 + p] the General MIDI program p.
 * Drums are never affected by the key, range or voice-leading rules. sage_controls_default()
 * turns everything off; sage_controls_set() parses one control from text (the names and value
 * syntax of every front end's flags, listed by sage_controls_describe()); sage_controls_check()
 * validates a struct; sage_session_set_controls() copies one into a session between any two
 * tokens, without allocating. */
#define SAGE_CONTROL_PROGRAMS 129
typedef enum sage_rule {
    SAGE_RULE_OFF = 0,
    SAGE_RULE_SOFT = 1,  /* a logit penalty */
    SAGE_RULE_STRICT = 2 /* a mask */
} sage_rule;
typedef enum sage_ending {
    SAGE_END_NONE = 0,   /* an endless stream: EOS is never sampled */
    SAGE_END_CADENCE = 1 /* sage_session_generate_bars with stop.ends_piece: EOS may end the last
                            bar asked (and only it), and its pitches are the tonic triad's: the
                            key's, or without a key the key the notes so far are in (Krumhansl-
                            Kessler), a note under everything sounding on the tonic */
} sage_ending;
typedef struct sage_controls {
    int32_t key_mode;     /* sage_rule */
    int32_t key_tonic;    /* 0..11 (C..B): the key's tonic (the cadence's target) */
    uint32_t key_classes; /* bit c set: pitch class c (0 = C .. 11 = B) is in the key */
    float key_penalty;    /* soft: subtracted from the logit of an out-of-key pitch; > 0 */
    /* Pitch range per program: notes outside [low, high] are masked (0..127: no limit). */
    uint8_t pitch_low[SAGE_CONTROL_PROGRAMS], pitch_high[SAGE_CONTROL_PROGRAMS];
    /* Velocity range per program: velocity tokens outside [low, high] are masked; when the
     * vocabulary has none inside, the nearest one is kept. low == high: a fixed velocity. */
    uint8_t velocity_low[SAGE_CONTROL_PROGRAMS], velocity_high[SAGE_CONTROL_PROGRAMS];
    /* Dynamics, before the ranges: each velocity token v takes the largest logit of the model's
     * velocity tokens that scale onto it (the token nearest their velocity x velocity_scale), so
     * the model's choice is played louder or softer. In (0, 8]; 1 = off. */
    float velocity_scale;
    /* Notes sounding at a note's onset, its own included: per program and overall; 0 = no limit. */
    uint8_t max_polyphony[SAGE_CONTROL_PROGRAMS];
    int32_t max_polyphony_total;
    /* Notes per bar, all programs together: a Bar is masked until density_min notes have started
     * in the bar (unless no note can be placed any more), notes are masked once density_max have;
     * 0 = no limit. */
    int32_t density_min, density_max;
    /* A requested program (sage_session_set_programs) silent for plays_after_bars bars gets
     * plays_bonus added to its Program token's logit until it plays; 0 = off. */
    int32_t plays_after_bars;
    float plays_bonus; /* > 0 */
    /* No parallel fifths, octaves or unisons between two programs' top lines from one onset to
     * the next (the measure of docs/evaluation.md): sage_rule; soft subtracts parallels_penalty. */
    int32_t parallels_mode;
    float parallels_penalty; /* > 0 */
    int32_t end;             /* sage_ending */
} sage_controls;

/* Library. */
const char* sage_version(void);
const char* sage_kernel_name(void); /* the active kernel path, e.g. "avx512vnni" or "neon" */
const char* sage_cpu_features(void);
const char* sage_last_error(void); /* message of the calling thread's last failed call */
const char* sage_status_string(sage_status status);
/* temperature 1, top_k 0, top_p 0.95, min_p 0: the defaults of every sage-edge front end. */
sage_sampling sage_sampling_default(void);
/* seed 0, SAGE_KV_INT8 (a NULL options pointer means these; a zeroed struct is SAGE_KV_F32). */
sage_session_options sage_session_options_default(void);
/* The checks every front end applies before it starts work: SAGE_ERR_ARGUMENT with a message
 * naming the value and its range when sampling values or a tempo are out of range (sampling
 * applies the same checks itself). */
sage_status sage_sampling_check(const sage_sampling* sampling);
sage_status sage_tempo_check(double bpm); /* SAGE_TEMPO_MIN_BPM..SAGE_TEMPO_MAX_BPM */
/* Everything off but two soft rules and the cadence: no key, ranges and velocities 0..127, no
 * limits; end cadence (a piece of N bars, sage_bar_stop.ends_piece, ends on the tonic triad of the
 * key its notes are in: with the shipped model the final chord stood on the tonic in 64 of 64
 * pieces, 28 without, docs/model.md); plays_after_bars 1 with plays_bonus 8 (a program asked for
 * and silent for a bar is brought in: with the shipped model, piano + bass or a string quartet
 * played every part in 10 of 10 seeds of 4 bars, against 2 to 4 without) and parallels_mode soft
 * with parallels_penalty 3 (parallel fifths + octaves per 100 beats from 7.7 to 2.9,
 * docs/model.md); key_penalty 1.5 (the size a soft key lock gets unless told, docs/controls.md: 3
 * removed every out-of-key note, as strict does, 1.5 kept a few). */
sage_controls sage_controls_default(void);
/* SAGE_ERR_ARGUMENT naming the field and its range when a control is out of range (low > high, a
 * mode or tonic out of range, a penalty not finite and > 0, density_min > density_max...). */
sage_status sage_controls_check(const sage_controls* controls);
/* Sets one control from text, the way every front end's flags do (`--key D:minor`):
 *   key            TONIC:SCALE (C, C#, Db ... B; major, minor, natural-minor, harmonic-minor,
 *                  melodic-minor, dorian, phrygian, lydian, mixolydian, locrian, pentatonic,
 *                  minor-pentatonic, blues, chromatic) or TONIC:D,D,... (semitones above the
 *                  tonic); also sets key-mode to strict if it was off; "off" clears the key
 *   key-mode       off | soft | strict
 *   key-penalty    a number > 0
 *   range          comma-separated: usual (every program's usual range, by General MIDI family),
 *                  LOW-HIGH (every program) or PROGRAM:LOW-HIGH; later items override earlier ones
 *   velocity       comma-separated: V or LOW-HIGH (every program), PROGRAM:V or PROGRAM:LOW-HIGH
 *   velocity-scale a number in (0, 8]
 *   max-polyphony  comma-separated: N (overall) or PROGRAM:N; 0 = no limit
 *   density        MIN-MAX, MIN- or -MAX notes per bar
 *   no-parallels   off | soft | strict
 *   parallels-penalty, plays-bonus   a number > 0
 *   plays-after    bars (0 = off)
 *   end            none | cadence
 * PROGRAM is -1 (drums) .. 127. On error (SAGE_ERR_ARGUMENT) the struct is unchanged. The result
 * is checked as sage_controls_check does. */
sage_status sage_controls_set(sage_controls* controls, const char* name, const char* value);
/* The controls sage_controls_set knows, for help texts and `info`: i in 0..count-1 gives the
 * name, the value syntax and one line of help (static strings); SAGE_ERR_ARGUMENT past the end. */
size_t sage_controls_count(void);
sage_status sage_controls_describe(size_t i, const char** name, const char** syntax,
                                   const char** help);
/* The usual sounding range of a General MIDI program (-1..127), the one `range usual` sets. */
sage_status sage_controls_usual_range(int32_t program, int32_t* low, int32_t* high);
/* Names of quantizations and attention modes as docs/format.md writes them ("q8_0", "askv");
 * "unknown" for other values. */
const char* sage_quant_name(uint32_t quant);
const char* sage_attention_name(uint32_t attention);
/* The names of sage_kv_memory values ("f32", "int8"; "unknown" for others), and back: every front
 * end's --kv-memory / kv_memory takes these names. SAGE_ERR_ARGUMENT for any other name. */
const char* sage_kv_memory_name(uint32_t kv_memory);
sage_status sage_kv_memory_parse(const char* name, uint32_t* out);

/* Models: a validated, memory-mapped .sage file. */
sage_status sage_model_load(const char* path, sage_model** out);
void sage_model_free(sage_model* model);
sage_status sage_model_get_info(const sage_model* model, sage_model_info* out);
/* Copies min(n, n_layers) horizons into out. */
sage_status sage_model_get_horizons(const sage_model* model, uint32_t* out, size_t n);

/* What token `id` means: its attribute family (a sage_family), its kind (a sage_kind) and its
 * values a and b. Any output pointer may be null. */
sage_status sage_model_get_token(const sage_model* model, int32_t id, uint32_t* family,
                                 uint32_t* kind, int32_t* a, int32_t* b);
/* The id of the first token of `kind` (a sage_kind, e.g. SAGE_KIND_BOS) in the vocabulary, or -1
 * if it has none. */
sage_status sage_model_find_kind(const sage_model* model, uint32_t kind, int32_t* id);
/* The metadata JSON the file carries (docs/format.md, "Metadata"), validated at load: *json
 * points into the model (valid while it lives), not NUL-terminated, *size bytes long. */
sage_status sage_model_get_metadata(const sage_model* model, const char** json, size_t* size);
/* The General MIDI programs (-1 = drums) the model learned, that is the programs of its training
 * data, with how many notes each had there, in ascending program order (docs/format.md,
 * "learned_programs"). *count receives how many the file records, at most
 * SAGE_MAX_LEARNED_PROGRAMS, and 0 when it does not record them (then nothing is known about what
 * the model plays); the first min(n, *count) go to programs and notes (either may be null). A
 * program the model did not learn gets almost no probability: front ends refuse to ask for one,
 * and report a generation in which a requested program stayed silent. */
#define SAGE_MAX_LEARNED_PROGRAMS 129
sage_status sage_model_get_learned_programs(const sage_model* model, int32_t* programs,
                                            uint64_t* notes, size_t n, size_t* count);

/* What one session of this model with these options (null: the defaults) holds (the same report
 * sage_session_get_memory gives), known without creating one: a session's every buffer is sized
 * from the model and the options alone. */
sage_status sage_model_get_session_memory(const sage_model* model,
                                          const sage_session_options* options, sage_memory* out);

/* Sessions. */
sage_status sage_session_create(const sage_model* model, const sage_session_options* options,
                                sage_session** out);
void sage_session_free(sage_session* session);
/* Forget every token: position 0, empty memory, grammar and events reset; the seed restarts. */
sage_status sage_session_reset(sage_session* session);
/* Restrict generated notes to these programs (-1 = drums); n = 0 allows every program. */
sage_status sage_session_set_programs(sage_session* session, const int32_t* programs, size_t n);
/* Apply musical controls (checked as sage_controls_check does) from the next token on; the session
 * keeps a copy. Allowed between any two tokens, allocates nothing; a token already drawn is drawn
 * again under them. */
sage_status sage_session_set_controls(sage_session* session, const sage_controls* controls);
sage_status sage_session_get_controls(const sage_session* session, sage_controls* out);
/* Generated bars take only the time signature numerator/denominator (numerator 0: any), so they
 * keep the length of bars played live; SAGE_ERR_ARGUMENT when the vocabulary has no such TimeSig.
 */
sage_status sage_session_set_meter(sage_session* session, int32_t numerator, int32_t denominator);
/* Run the model over n tokens. If logits is not null it receives the logits after the last token
 * ([vocab_size] floats) or, with all_logits != 0, after every token ([n][vocab_size]). Feeding
 * n = 0 tokens changes nothing and returns the last logits again (SAGE_ERR_STATE on a session
 * that has been fed nothing: it has no logits yet). */
sage_status sage_session_feed(sage_session* session, const int32_t* tokens, size_t n, float* logits,
                              int all_logits);
/* Draw the next token from the logits of the last fed token, under the grammar mask. Does not
 * feed it: it stays pending until the next feed (or reset, or set_programs), and sampling again
 * returns the same token, whatever the sampling values. A session that has been fed nothing (new
 * or reset) starts a new piece: the model's BOS is fed first (SAGE_ERR_STATE if the vocabulary
 * has none). */
sage_status sage_session_sample(sage_session* session, const sage_sampling* sampling,
                                int32_t* token);
/* Sample and feed n tokens, writing them to tokens (which may be null). */
sage_status sage_session_generate(sage_session* session, const sage_sampling* sampling,
                                  int32_t* tokens, size_t n);
/* Sample and feed tokens until stop->bars notated bars are complete (see sage_bar_stop), at most
 * `capacity` of them into tokens; *count receives how many, *reason why it returned, and *stop
 * the progress. Each token is checked before it is fed: the Bar after the last bar asked (or,
 * inside a token bar of several notated bars, the first Position at or past stop->end) is not
 * fed but left pending (see sage_session_sample), so generating a bar or a few tokens per call
 * gives exactly the tokens of one long call. Allocates nothing. */
sage_status sage_session_generate_bars(sage_session* session, const sage_sampling* sampling,
                                       sage_bar_stop* stop, int32_t* tokens, size_t capacity,
                                       size_t* count, sage_stop_reason* reason);
/* Tokens fed since the session was created or reset. */
sage_status sage_session_get_position(const sage_session* session, uint64_t* position);
/* BPM of the last Tempo token fed, 120 before one. */
sage_status sage_session_get_tempo(const sage_session* session, double* bpm);
/* The bar the stream is in; its index counts the Bar tokens fed since the reset. */
sage_status sage_session_get_bar(const sage_session* session, sage_bar* out);
/* The grammar mask for the next token: mask[id] = 1 where id may follow, for n = vocab_size. */
sage_status sage_session_allowed_next(const sage_session* session, uint8_t* mask, size_t n);
sage_status sage_session_get_memory(const sage_session* session, sage_memory* out);
/* Moves up to capacity completed notes (in the order they were decoded) out of the session's
 * fixed-size event queue; *count receives how many. Notes not read before the queue fills are
 * dropped oldest first, and sage_session_dropped_events counts them. */
sage_status sage_session_pop_events(sage_session* session, sage_note_event* events, size_t capacity,
                                    size_t* count);
sage_status sage_session_get_dropped_events(const sage_session* session, uint64_t* dropped);

/* MIDI output (docs/jam.md, "Playing the notes"): notes with their times become MIDI 1.0 channel
 * messages, each due at its time, for a player that sleeps until the earliest is due and sends
 * everything due then; sage-edge-run's playback plays through it, and a jam's notes do through the
 * jam player (sage_jam_player_*, below), whichever front end plays them. Times are in one unit the
 * caller chooses for a scheduler (quarter notes of sage_note_event, microseconds of
 * sage_jam_note.time_us, a followed clock's grid ticks of sage_jam_note.tick): the scheduler only
 * compares them. A program change goes out at a channel's first note and when its program changes
 * (never on channel 10, index 9: drums). A note given SAGE_MIDI_CHANNEL_AUTO gets a channel by its
 * program: drums (-1) channel 10, melodic programs the channels in order of first appearance,
 * skipping 10 (with more than 15, the one assigned longest ago again). At one time note-offs go
 * first, then program changes, then note-ons. When notes of one pitch overlap on a channel, its
 * note-off goes out when the last of them ends (an earlier note's end does not cut a later one).
 * Messages are 2 or 3 bytes, each with its status byte (no running status). Pitches and velocities
 * are clamped to MIDI's range (a note-on plays at least velocity 1). Nothing allocates after
 * sage_midi_scheduler_create. A scheduler is not synchronised: one thread at a time. */
typedef struct sage_midi_scheduler sage_midi_scheduler;
#define SAGE_MIDI_CHANNEL_AUTO (-1)

typedef struct sage_midi_note {
    double time, end; /* in the scheduler's unit; an end before time counts as time */
    int32_t pitch, velocity;
    int32_t program; /* General MIDI program 0..127, -1 for drums */
    int32_t channel; /* 0..15, or SAGE_MIDI_CHANNEL_AUTO */
} sage_midi_note;

typedef struct sage_midi_scheduler_state {
    size_t queued;     /* messages waiting */
    size_t free_notes; /* notes sage_midi_scheduler_add has room for now */
    double next_time;  /* when the earliest waiting message is due; only when queued > 0 */
} sage_midi_scheduler_state;

/* Room for `notes` notes at once (each takes at most 3 messages); SAGE_ERR_ARGUMENT outside
 * 1..SAGE_MIDI_SCHEDULER_MAX_NOTES. */
#define SAGE_MIDI_SCHEDULER_MAX_NOTES 16777216u
sage_status sage_midi_scheduler_create(size_t notes, sage_midi_scheduler** out);
void sage_midi_scheduler_free(sage_midi_scheduler* scheduler);
/* Queues a note's messages; SAGE_ERR_STATE, queueing nothing, when there is no room (free_notes
 * 0), SAGE_ERR_ARGUMENT for a channel outside 0..15 and not SAGE_MIDI_CHANNEL_AUTO. */
sage_status sage_midi_scheduler_add(sage_midi_scheduler* scheduler, const sage_midi_note* note);
sage_status sage_midi_scheduler_get_state(const sage_midi_scheduler* scheduler,
                                          sage_midi_scheduler_state* out);
/* The four below write whole messages to out, at most capacity bytes, and *written receives how
 * many bytes. A capacity of SAGE_MIDI_MAX_MESSAGE_BYTES writes one message a call, for a port that
 * takes one message at a time. */
#define SAGE_MIDI_MAX_MESSAGE_BYTES 3
/* Takes every message due at or before `time`, in order, while they fit (the rest stay queued:
 * call again while it writes any). */
sage_status sage_midi_scheduler_take_due(sage_midi_scheduler* scheduler, double time, uint8_t* out,
                                         size_t capacity, size_t* written);
/* For a jump of the music past `time` (a followed clock's Start, or a Continue a Song Position
 * Pointer moved: sage_live_counts.clock_from_tick): removes every message due before it, writing
 * only the program changes and the note-offs of the notes that sound; the note-ons are dropped,
 * and their note-offs whenever due. Call again while it writes any. */
sage_status sage_midi_scheduler_skip_before(sage_midi_scheduler* scheduler, double time,
                                            uint8_t* out, size_t capacity, size_t* written);
/* For a pause of the music (a followed clock's Stop): note-offs now for every sounding note, whose
 * queued note-offs are then dropped; the notes to come stay queued. Call again while it writes
 * any. */
sage_status sage_midi_scheduler_release(sage_midi_scheduler* scheduler, uint8_t* out,
                                        size_t capacity, size_t* written);
/* For a stop: note-offs for every sounding note, and nothing queued is played. Call again while
 * it writes any. */
sage_status sage_midi_scheduler_silence(sage_midi_scheduler* scheduler, uint8_t* out,
                                        size_t capacity, size_t* written);

/* Live input (docs/jam.md): a musician's timed MIDI events become the model's tokens bar by bar,
 * the tokens sage_edge.tokenizer.Tokenizer.encode gives for the same notes, ready to feed a
 * session. Times are microseconds on the caller's clock (e.g. CLOCK_MONOTONIC), never decreasing.
 * An onset goes to the nearest grid point of the model (halves up), a length is rounded the same
 * way and set to the nearest Duration token; velocities, tempos likewise to the vocabulary's
 * nearest. A note whose grid point lies in a bar already taken (late) is placed at the first point
 * of the next bar (or, when part of the open bar was taken ahead, at its first point not taken).
 * Nothing allocates after sage_live_create. */
typedef struct sage_live sage_live;

typedef struct sage_live_options {
    int64_t start_us;             /* where bar 0 begins on the caller's clock */
    uint32_t us_per_quarter;      /* the tempo until a tempo event; 500000 = 120 BPM */
    int32_t bar_quarters;         /* bars of bar_quarters/4 (a TimeSig of the model) until a
                                     meter change (sage_live_set_meter); 4 */
    int32_t channel_programs[16]; /* General MIDI program per channel, -1 = drums */
    int32_t follow_clock; /* nonzero: MIDI clock bytes (24 ppqn) drive the grid (docs/jam.md,
                             "Clock"): Start (0xFA) makes the next pulse the downbeat of the first
                             bar, from the one not yet taken on, that nothing was played in or
                             after and the clock has not entered (the notes played before Start
                             stay where they were played; the bar they are in closes as played);
                             every pulse on a grid tick re-anchors the grid there, the last 24
                             pulses give the tempo. Stop (0xFC): the grid stands at the last pulse,
                             notes sounding end there, notes played are not heard; Continue (0xFB):
                             on from there, or, after a Song Position Pointer (0xF2, read while
                             stopped), at its position's place in the bar, from where it stopped
                             on (the time skipped holds nothing); a pointer read while running is
                             a Stop, the pointer and a Continue at once (one to the sixteenth the
                             clock is in changes nothing) */
} sage_live_options;

typedef struct sage_live_counts {
    uint64_t bars_taken; /* bars written out so far */
    uint64_t notes;      /* note-ons read inside the vocabulary's pitch range */
    uint64_t late;       /* notes placed later because their grid point was taken */
    uint64_t dropped;    /* notes outside the pitch range, or beyond the 512 held or waiting */
    uint32_t sounding;   /* notes held now, not yet written */
    uint32_t waiting;    /* notes read and not yet written */
    int64_t clock_tick;  /* following a clock: the grid tick of its last pulse on one, else -1 */
    int64_t clock_start_tick; /* following a clock: the downbeat its last Start made, else -1 */
    int64_t clock_from_tick;  /* following a clock: a note decided for an earlier tick is not to be
                                 played (its time passed without the clock, or the clock jumped
                                 past it): the last Start's downbeat, or where the last Continue
                                 resumed after a Song Position Pointer moved it; else -1 */
    uint64_t clock_stops;     /* Stops read while the clock ran: at each, release the notes
                                 sounding (the music stands until Continue or Start) */
    int32_t clock_running;    /* 1 from a Start or Continue until a Stop */
    uint64_t notes_while_stopped; /* note-ons read while the clock was stopped: not heard */
} sage_live_counts;

/* start 0, 120 BPM, 4/4, every channel program 0 except channel 10 (index 9): drums (-1). */
sage_live_options sage_live_options_default(void);
/* SAGE_ERR_ARGUMENT when the options do not fit the model (its time signatures, programs). */
sage_status sage_live_create(const sage_model* model, const sage_live_options* options,
                             sage_live** out);
void sage_live_free(sage_live* live);
sage_status sage_live_reset(sage_live* live); /* forget notes and bars; the options stay */
/* A note on (velocity 0 = note off) or off on channel 0..15. A second note-on of a sounding key
 * ends the first. */
sage_status sage_live_note(sage_live* live, int64_t time_us, int32_t channel, int32_t pitch,
                           int32_t velocity);
sage_status sage_live_program(sage_live* live, int32_t channel, int32_t program);
/* A tempo change, taking effect at the grid point nearest time_us. */
sage_status sage_live_tempo(sage_live* live, int64_t time_us, uint32_t us_per_quarter);
/* Meter changes (docs/jam.md, "Meter changes"). Bars follow a table of meters: from bar `bar` on
 * (until a later change) bars are quarters/4, a TimeSig of the model. `bar` must not be started:
 * the open bar while none of its tokens were taken (sage_live_take_final takes its Bar and TimeSig
 * first), or a later one. SAGE_ERR_ARGUMENT when it is started, the model has no such meter, or
 * 64 changes are planned ahead. */
sage_status sage_live_set_meter(sage_live* live, uint64_t bar, int32_t quarters);
/* A time signature met at time_us, as in a file: from the first bar line at or after the grid
 * point nearest time_us (miditok delays a signature to the next bar so), or from the first bar not
 * started when that one is. *bar (may be NULL) receives the bar it starts. */
sage_status sage_live_meter(sage_live* live, int64_t time_us, int32_t quarters, uint64_t* bar);
/* The bar table: the grid tick where bar `bar` starts and its quarters, for the open bar, the bars
 * ahead (as planned so far) and past bars back to the 64th meter change before; SAGE_ERR_ARGUMENT
 * for a bar older than that. */
sage_status sage_live_get_bar(const sage_live* live, uint64_t bar, int64_t* start_tick,
                              int32_t* quarters);
/* Raw MIDI bytes as a port delivers them: running status, real-time bytes anywhere, SysEx and
 * messages without tokens skipped, program changes followed (not on drum channels), All Notes Off
 * (controller 123) releasing the channel's keys down; a message cut
 * between calls is completed by the next call. One SysEx is read: the Universal Real Time time
 * signature (F0 7F <device> 03 02|42 <ln> <nn> <dd> <cc> <bb> [<nn> <dd>...] F7, immediate or
 * delayed), a meter change as sage_live_meter at the time it arrives, in the tokenizer's N/4 form
 * (6/8 is 3/4, 3/8 a 3/4 bar of two notated bars; compound pairs add up); one the model cannot
 * write is skipped. */
sage_status sage_live_midi(sage_live* live, int64_t time_us, const uint8_t* bytes, size_t n);
/* Takes the next bar if it is complete at now_us: its last grid point has passed and every note
 * starting in it has ended (with force, once its last grid point has passed: notes still sounding
 * are cut at the bar line, written from their grid point to it; their note-offs are then
 * ignored). *count receives the number of tokens written
 * (Bar, TimeSig, then Position, Tempo and notes in the tokenizer's order; those taken ahead by
 * sage_live_take_final left out), 0 when the bar is not complete (or when all its tokens were
 * taken ahead: bars_taken of sage_live_get_counts says whether a bar was taken);
 * SAGE_ERR_ARGUMENT, taking nothing, when capacity is too small for it. */
sage_status sage_live_take_bar(sage_live* live, int64_t now_us, int force, int32_t* tokens,
                               size_t capacity, size_t* count);
/* Takes ahead the part of the open bar that is final at now_us: its Bar and TimeSig, then the
 * positions the clock has passed (no later event can round into them) up to the first note still
 * sounding (its Program, Pitch and Velocity; its Duration waits for the note-off). Called between
 * events, it hands out the bar in pieces; sage_live_take_bar then writes the rest, and the pieces
 * together are the bar's tokens. A note or tempo that would land in a part already taken is
 * placed at the first grid point not taken (late). *count receives how many tokens (0: nothing
 * new); SAGE_ERR_ARGUMENT, taking nothing, when capacity is too small. */
sage_status sage_live_take_final(sage_live* live, int64_t now_us, int32_t* tokens, size_t capacity,
                                 size_t* count);
/* When grid tick `tick` (the model's ticks_per_quarter from bar 0) falls on the caller's clock,
 * under the tempo in force; and the grid tick of a time. */
sage_status sage_live_time_of(const sage_live* live, int64_t tick, int64_t* time_us);
sage_status sage_live_tick_at(const sage_live* live, int64_t time_us, int64_t* tick);
sage_status sage_live_get_counts(const sage_live* live, sage_live_counts* out);

/* Playing with a musician (docs/jam.md): a session that listens through a live encoder and plays.
 *
 * SAGE_JAM_CALL_RESPONSE: every bar the musician plays is fed as it completes. A phrase ends
 * phrase_bars bars after the bar of its first note, or at the first bar line after a rest of
 * rest_quarters (0: off); the engine then answers phrase_bars bars on its programs from that bar
 * line, continuing from everything played, and listens again. Notes played during an answer are
 * not heard. SAGE_JAM_ACCOMPANY: once the musician's bar b is complete (forced at its last grid
 * point: a held note is cut there), the engine writes its own parts into bar b between the
 * musician's notes and plays them lookahead_bars later, on the same grid. With lookahead_bars 0
 * (anticipation) it plays bar b + 1 in bar b + 1, decided from the musician's bars up to b and,
 * every listen_ticks grid ticks (0: only at bar lines), from what the musician has played of bar
 * b + 1 so far (the notes that start before that grid point); each time the session goes back to
 * the bar line and is fed the bar so far as it sounded (docs/jam.md, "What the engine knows").
 * predict (anticipation): the model also writes the musician's part ahead (the program of the
 * musician's first channel), never played, to harmonise with; it is replaced by what the
 * musician plays. react (anticipation): at each listening point the engine waits for the
 * musician's notes at that grid point (until one comes, at most half a grid step) and decides
 * its own there knowing them: they sound that much late. Generated bars keep the musician's meter
 * bar by bar: the jam's live encoder's bar table (sage_live_set_meter on sage_jam_get_live's
 * encoder, or a time signature SysEx on its input) gives each bar's TimeSig, the session's meter
 * lock (sage_session_set_meter) follows it, and note times are the table's. */
typedef struct sage_jam sage_jam;
typedef enum sage_jam_mode { SAGE_JAM_CALL_RESPONSE = 0, SAGE_JAM_ACCOMPANY = 1 } sage_jam_mode;

/* listen_ticks: one beat (the model's ticks per quarter; at bar lines if a bar is not longer) when
 * accompanying in time (lookahead_bars 0), at bar lines otherwise. */
#define SAGE_JAM_LISTEN_BEAT 0xFFFFFFFFu
/* react: on when accompanying in time (lookahead_bars 0), off otherwise. */
#define SAGE_JAM_AUTO (-1)

typedef struct sage_jam_options {
    int32_t mode;            /* a sage_jam_mode */
    uint32_t phrase_bars;    /* call and response: bars of a phrase and of an answer, 1..64 */
    double rest_quarters;    /* call and response: a rest this long ends a phrase; 0 = off */
    uint32_t lookahead_bars; /* accompaniment: the engine's part of bar b sounds in bar b + this,
                                0..16; 0 (the default) = anticipation, in time; 1 = one bar
                                behind, when reaction latency matters more than consonance */
    uint32_t listen_ticks;   /* anticipation: listen again every this many grid ticks, below a
                                bar; 0 = at bar lines only; SAGE_JAM_LISTEN_BEAT (the default) =
                                every beat in anticipation, else 0 */
    int32_t predict;         /* anticipation: 1 = the model writes the musician's part ahead */
    int32_t react;           /* anticipation: 1 = at a listening point, wait for the musician's
                                note there (at most half a grid step) and play right after it;
                                SAGE_JAM_AUTO (the default) = 1 in anticipation, else 0 */
    int32_t programs[16];    /* the engine's programs (-1 = drums) */
    uint32_t n_programs;     /* 1..16 */
    sage_sampling sampling;
    uint64_t seed;
    sage_live_options live; /* the musician's clock, tempo, meter and channels */
} sage_jam_options;

/* A note the engine plays, on the caller's clock: its channel is the position of its program in
 * `programs` (channels 0, 1, ... skipping 9; drums on 9). */
typedef struct sage_jam_note {
    int64_t time_us, end_us;
    int64_t tick, end_tick; /* the same on the grid (the model's ticks from bar 0): following a
                               clock, a note is due when the clock's pulse reaches its tick */
    int32_t pitch, velocity, program, channel;
} sage_jam_note;

typedef struct sage_jam_state {
    int32_t answering;        /* call and response: the engine holds the floor */
    uint64_t answers;         /* answers started */
    uint64_t tokens;          /* tokens in the session's stream */
    uint64_t dropped_notes;   /* notes not polled before 1024 newer ones */
    uint64_t replays;         /* anticipation: times the session went back into the bar */
    uint64_t replayed_tokens; /* anticipation: tokens those replays fed */
    int32_t generating;       /* the engine has tokens left to generate: poll again at once (a
                                 poll does a short step, so that a front end reads its input
                                 between) */
} sage_jam_state;

/* call and response, 4 bars, no rest rule, lookahead 0, listen_ticks SAGE_JAM_LISTEN_BEAT,
 * predict 0, react SAGE_JAM_AUTO, programs {0}, default sampling, seed 0,
 * sage_live_options_default(). So SAGE_JAM_ACCOMPANY with the defaults accompanies in time,
 * listening every beat and reacting (docs/jam.md, "In time"): the musician hears it as consonant
 * as what the model writes knowing the whole bar, each beat's notes late by one decision's work;
 * lookahead_bars 1 alone gives one bar behind (no listening, no reacting, no such latency). Call
 * and response ignores the three. */
sage_jam_options sage_jam_options_default(void);
sage_status sage_jam_create(const sage_model* model, const sage_jam_options* options,
                            sage_jam** out);
void sage_jam_free(sage_jam* jam);
/* The jam's live encoder, to give it the musician's events (sage_live_note, sage_live_midi, ...)
 * and ask it for times (sage_live_time_of); owned by the jam: never free it. Taking bars from it
 * directly (sage_live_take_bar) would hide them from the jam. */
sage_status sage_jam_get_live(sage_jam* jam, sage_live** live);
/* Takes the bars complete at now_us and feeds them, generates a few tokens of the engine's part
 * (an accompanied bar whole), and moves up to capacity of the engine's new notes to out, in the
 * order they were decoded (each ahead of its time_us: the caller schedules it); *count receives
 * how many. Call it often (every millisecond or so); allocates nothing. */
sage_status sage_jam_poll(sage_jam* jam, int64_t now_us, sage_jam_note* out, size_t capacity,
                          size_t* count);
sage_status sage_jam_get_state(const sage_jam* jam, sage_jam_state* out);
/* The options the jam plays with: those given to sage_jam_create, with SAGE_JAM_LISTEN_BEAT and
 * SAGE_JAM_AUTO replaced by what they mean for the mode (a front end can say how it plays). */
sage_status sage_jam_get_options(const sage_jam* jam, sage_jam_options* out);
/* Musical controls for the engine's parts, from its next token on (sage_session_set_controls). */
sage_status sage_jam_set_controls(sage_jam* jam, const sage_controls* controls);
/* The last min(capacity, 8192) tokens of the session's stream (the musician's bars and the
 * engine's), oldest first; *count receives how many. */
sage_status sage_jam_get_history(const sage_jam* jam, int32_t* tokens, size_t capacity,
                                 size_t* count);

/* Playing a jam's notes (docs/jam.md, "Playing the notes" and "Clock"): the one place where a
 * jam's notes become MIDI bytes on time, with the clock and the end of a session, for every front
 * end (sage-edge-run --midi-in, sage_edge.live.Jam.serve, examples/answer_midi.c). A front end's
 * loop: give the input's bytes to the jam's live encoder; sage_jam_player_take_due; then
 * sage_jam_player_poll; sage_jam_player_take_due again; when sage_jam_player_state.done, end;
 * else wait for input at most sage_jam_player_wait's microseconds. On the input's end call
 * sage_jam_player_input_ended; at the end, whatever ends it (done, a signal), sage_jam_player_stop.
 * The bytes written are MIDI 1.0 messages, each with its status byte.
 *
 * The player queues the notes in a MIDI scheduler of its own (the rules of sage_midi_scheduler_*,
 * room for SAGE_JAM_PLAYER_NOTES notes) by time_us on the jam's own clock, or, when the jam follows
 * the input's clock (sage_live_options.follow_clock), by grid tick: due when the clock's last
 * pulse (sage_live_counts.clock_tick) reaches it. Following, the notes decided for a tick before
 * where the music went on (sage_live_counts.clock_from_tick: a Start, a Continue a Song Position
 * Pointer moved) are not played (those queued are skipped as sage_midi_scheduler_skip_before does,
 * those polled later are not queued), and a Stop (sage_live_counts.clock_stops) releases the notes
 * sounding (sage_midi_scheduler_release). Leading (lead_clock): Start (0xFA) at bar 0 with its
 * first pulse, then 24 pulses (0xF8) per quarter note, each at the live encoder's time for it (a
 * pulse on a grid tick at sage_live_time_of of the tick, so before the notes due then), and Stop
 * (0xFC) at sage_jam_player_stop; never Continue (the leader does not pause).
 *
 * The end: after sage_jam_player_input_ended the jam is polled on for the bars a last phrase needs
 * to end and be answered (or accompanied lookahead_bars later): until the start of bar
 * b + 2 * phrase_bars + later + 2, b the bar the input ended in, later = lookahead_bars when
 * accompanying, else 1 (the live encoder's bar table). Then the player is closing: it polls no
 * more, plays what is queued, and is done when nothing is (following a clock, at once: its pulses
 * ended with the input). sage_jam_player_stop ends the notes sounding with their note-offs (the
 * player knows which: no All Notes Off) and plays nothing queued.
 *
 * Nothing allocates after sage_jam_player_create. A player is not synchronised; the jam must
 * outlive it, and while it lives poll the jam through it only. */
typedef struct sage_jam_player sage_jam_player;
#define SAGE_JAM_PLAYER_NOTES \
    1365                       /* notes queued at once (4 095 messages): more than a bar holds */
#define SAGE_JAM_LATE_US 10000 /* a message sent this much after it was due is late */

typedef struct sage_jam_player_state {
    uint64_t notes;        /* notes queued to play (a full queue's are dropped) */
    uint64_t dropped;      /* notes not queued: decided for a tick a followed clock skipped, or
                              no room */
    uint64_t late_sends;   /* on the jam's own clock: calls of sage_jam_player_take_due (one per
                              now_us) that wrote messages more than SAGE_JAM_LATE_US after due */
    int64_t worst_late_us; /* the latest of those */
    uint64_t pulses;       /* leading: clock pulses sent */
    size_t queued;         /* messages waiting */
    int32_t closing;       /* the input ended and its tail passed: no more polls */
    int32_t done;          /* closing and nothing left to play: call sage_jam_player_stop */
} sage_jam_player_state;

/* lead_clock nonzero: send Start, the pulses and Stop; SAGE_ERR_ARGUMENT when the jam follows the
 * input's clock. */
sage_status sage_jam_player_create(sage_jam* jam, int32_t lead_clock, sage_jam_player** out);
void sage_jam_player_free(sage_jam_player* player);
/* Polls the jam (sage_jam_poll, again while it fills what is asked) and queues its notes; up to
 * capacity of the notes queued go to out (those not played are left out); *count receives how
 * many: call again while it is capacity. Nothing once closing. */
sage_status sage_jam_player_poll(sage_jam_player* player, int64_t now_us, sage_jam_note* out,
                                 size_t capacity, size_t* count);
/* Writes to out what is due at now_us: following, a Stop's note-offs and a jump's (above); leading,
 * the pulses due; the messages due. Whole messages while they fit (capacity at least
 * SAGE_MIDI_MAX_MESSAGE_BYTES; exactly that: one message a call, for a port that takes one at a
 * time); *written receives how many bytes: call again while it writes any. */
sage_status sage_jam_player_take_due(sage_jam_player* player, int64_t now_us, uint8_t* out,
                                     size_t capacity, size_t* written);
/* The musician is done (the input ended): the tail starts (a second call changes nothing). */
sage_status sage_jam_player_input_ended(sage_jam_player* player, int64_t now_us);
/* How long to wait for input before calling again: 0 while the jam generates (poll again at
 * once), else until the next pulse or message due, at most 1 000 microseconds. */
sage_status sage_jam_player_wait(const sage_jam_player* player, int64_t now_us, int64_t* wait_us);
/* The end: note-offs for the notes sounding, nothing queued is played, and, leading a clock that
 * started, Stop; then take_due writes nothing. Writes as take_due does: call again while it writes
 * any. */
sage_status sage_jam_player_stop(sage_jam_player* player, uint8_t* out, size_t capacity,
                                 size_t* written);
sage_status sage_jam_player_get_state(const sage_jam_player* player, sage_jam_player_state* out);

#ifdef __cplusplus
}
#endif

#endif /* SAGE_EDGE_H */
