/* stream_notes: the smallest instrument loop on the sage-edge C API (C99).
 *
 *   stream_notes MODEL.sage [TOKENS] [SEED]
 *
 * Loads a model, creates a session (a new session starts a piece from the model's BOS token when
 * it first generates) and generates TOKENS tokens (default 256) a few at a time. After each step it
 * moves the finished notes out of the session and hands each one to a callback, which is where an
 * instrument would schedule a note-on and a note-off (here it prints the note). All memory is
 * allocated when the session is created; the generation loop allocates nothing.
 *
 * Build: link against sage_edge_core (cmake target) or libsage_edge_core.a with a C++ linker.
 */
#include <sage_edge/sage_edge.h>
#include <stdio.h>
#include <stdlib.h>

typedef void (*note_callback)(const sage_note_event* note, void* user);

typedef struct note_counter {
    unsigned long notes;
    double last_time; /* notes arrive with non-decreasing onsets */
    int out_of_order;
} note_counter;

/* The instrument's side: called once per finished note. */
static void on_note(const sage_note_event* note, void* user) {
    note_counter* counter = (note_counter*)user;
    if (note->time < counter->last_time) counter->out_of_order = 1;
    counter->last_time = note->time;
    counter->notes++;
    printf("note at %8.3f quarters: pitch %3d velocity %3d program %3d, %.3f quarters long\n",
           note->time, note->pitch, note->velocity, note->program, note->duration);
}

/* Moves every finished note out of the session into the callback. */
static sage_status drain(sage_session* session, note_callback callback, void* user) {
    sage_note_event batch[32];
    size_t count = 0;
    do {
        size_t i;
        sage_status status = sage_session_pop_events(session, batch, 32, &count);
        if (status != SAGE_OK) return status;
        for (i = 0; i < count; ++i) callback(&batch[i], user);
    } while (count == 32);
    return SAGE_OK;
}

static int fail(const char* what, sage_status status) {
    fprintf(stderr, "stream_notes: %s: %s: %s\n", what, sage_status_string(status),
            sage_last_error());
    return 1;
}

int main(int argc, char** argv) {
    const size_t step = 8; /* tokens per generate call: notes reach the callback promptly */
    unsigned long tokens = 256;
    sage_model* model = NULL;
    sage_session* session = NULL;
    sage_session_options options = sage_session_options_default();
    sage_sampling sampling = sage_sampling_default();
    note_counter counter = {0, 0.0, 0};
    sage_memory memory;
    sage_status status;
    unsigned long generated = 0;
    int result = 1;

    if (argc < 2 || argc > 4) {
        fprintf(stderr, "usage: stream_notes MODEL.sage [TOKENS] [SEED]\n");
        return 2;
    }
    if (argc > 2) tokens = strtoul(argv[2], NULL, 10);
    if (argc > 3) options.seed = strtoull(argv[3], NULL, 10);
    sampling.temperature = 0.9f;

    status = sage_model_load(argv[1], &model);
    if (status != SAGE_OK) return fail("load the model", status);
    status = sage_session_create(model, &options, &session);
    if (status != SAGE_OK) {
        result = fail("create a session", status);
        goto done;
    }
    status = sage_session_get_memory(session, &memory);
    if (status != SAGE_OK) {
        result = fail("memory report", status);
        goto done;
    }
    printf("kernel %s, session memory %llu bytes (key/value %llu)\n", sage_kernel_name(),
           (unsigned long long)memory.total_bytes, (unsigned long long)memory.kv_bytes);

    while (status == SAGE_OK && generated < tokens) {
        const size_t n = tokens - generated < step ? (size_t)(tokens - generated) : step;
        status = sage_session_generate(session, &sampling, NULL, n);
        generated += n;
        if (status == SAGE_OK) status = drain(session, on_note, &counter);
    }
    if (status != SAGE_OK) {
        result = fail("generate", status);
        goto done;
    }
    printf("%lu tokens, %lu notes\n", generated, counter.notes);
    /* A model that produced no notes, or notes out of order, is a failure for the ctest check. */
    result = counter.notes > 0 && !counter.out_of_order ? 0 : 1;

done:
    sage_session_free(session);
    sage_model_free(model);
    return result;
}
