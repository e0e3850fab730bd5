/* answer_midi: call and response on MIDI devices, on the sage-edge C API (C99 + POSIX).
 *
 *   answer_midi MODEL.sage IN OUT [BPM] [PROGRAM]
 *
 * Reads a musician's MIDI bytes from IN (a USB MIDI device such as /dev/snd/midiC1D0, a serial
 * port or a pty), and after each phrase of 2 bars answers 2 bars on PROGRAM (default 42, cello)
 * to OUT, at BPM (default 120) in 4/4 from the moment it starts. Bytes go to the jam's live
 * encoder stamped with the monotonic clock; the jam is polled every millisecond; each note it
 * returns goes to the engine's MIDI scheduler, which writes its messages when due. It stops when
 * IN ends. Nothing is allocated after the jam and the scheduler are created.
 */
#define _POSIX_C_SOURCE 200809L
#include <fcntl.h>
#include <sage_edge/sage_edge.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static unsigned long sent = 0; /* bytes */

static int64_t now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

/* Writes every message due by `now`; returns the time of the next one (or now + 1 ms). */
static int64_t send_due(sage_midi_scheduler* scheduler, int out, int64_t now) {
    unsigned char bytes[256];
    size_t n = 0;
    sage_midi_scheduler_state state;
    do {
        sage_midi_scheduler_take_due(scheduler, (double)now, bytes, sizeof bytes, &n);
        if (n > 0 && write(out, bytes, n) != (ssize_t)n) perror("write");
        sent += n;
    } while (n > 0);
    sage_midi_scheduler_get_state(scheduler, &state);
    return state.queued > 0 && state.next_time < now + 1000 ? (int64_t)state.next_time : now + 1000;
}

static int fail(const char* what) {
    fprintf(stderr, "answer_midi: %s: %s\n", what, sage_last_error());
    return 1;
}

int main(int argc, char** argv) {
    sage_model* model = NULL;
    sage_jam* jam = NULL;
    sage_live* live = NULL;
    sage_midi_scheduler* scheduler = NULL;
    sage_midi_scheduler_state waiting;
    sage_jam_options options = sage_jam_options_default();
    sage_jam_note notes[64];
    unsigned char bytes[256];
    int in, out, input_open = 1;
    int64_t ended = 0, tail_us;
    double bpm = argc > 4 ? atof(argv[4]) : 120.0;
    if (argc < 4) {
        fprintf(stderr, "usage: answer_midi MODEL.sage IN OUT [BPM] [PROGRAM]\n");
        return 2;
    }
    in = open(argv[2], O_RDONLY | O_NONBLOCK | O_NOCTTY);
    out = open(argv[3], O_WRONLY | O_CREAT | O_TRUNC | O_NOCTTY, 0644);
    if (in < 0 || out < 0 || sage_tempo_check(bpm) != SAGE_OK) {
        fprintf(stderr, "answer_midi: cannot open %s or %s, or a bad BPM\n", argv[2], argv[3]);
        return 2;
    }
    if (sage_model_load(argv[1], &model) != SAGE_OK) return fail("model");
    options.phrase_bars = 2;
    options.programs[0] = argc > 5 ? atoi(argv[5]) : 42;
    options.n_programs = 1;
    options.live.us_per_quarter = (uint32_t)(60e6 / bpm);
    options.live.start_us = now_us();
    tail_us = 5 * 4 * (int64_t)options.live.us_per_quarter; /* a last phrase and its answer */
    if (sage_jam_create(model, &options, &jam) != SAGE_OK) return fail("jam");
    if (sage_midi_scheduler_create(1024, &scheduler) != SAGE_OK) return fail("scheduler");
    sage_jam_get_live(jam, &live);

    for (;;) {
        int64_t now = now_us(), next;
        size_t count = 0, i;
        struct timespec wait;
        ssize_t n = -1;
        while (input_open && (n = read(in, bytes, sizeof bytes)) != 0) {
            if (n < 0) break; /* nothing waiting */
            sage_live_midi(live, now, bytes, (size_t)n);
        }
        if (input_open && n == 0) input_open = 0, ended = now;
        sage_midi_scheduler_get_state(scheduler, &waiting);
        if (!input_open && now - ended > tail_us && waiting.queued == 0) break;
        if (sage_jam_poll(jam, now, notes, 64, &count) != SAGE_OK) return fail("poll");
        for (i = 0; i < count; i++) { /* a full scheduler drops the note: never in 2 bars */
            const sage_jam_note* j = &notes[i];
            const sage_midi_note note = {(double)j->time_us, (double)j->end_us, j->pitch,
                                         j->velocity,        j->program,        j->channel};
            sage_midi_scheduler_add(scheduler, &note);
        }
        next = send_due(scheduler, out, now_us()) - now_us(); /* sleep until then, 1 ms at most */
        wait.tv_sec = 0;
        wait.tv_nsec = (long)(next < 0 ? 0 : next > 1000 ? 1000000 : next * 1000);
        nanosleep(&wait, NULL);
    }
    {
        sage_live_counts heard;
        sage_jam_state state;
        sage_live_get_counts(live, &heard);
        sage_jam_get_state(jam, &state);
        printf("answer_midi: heard %lu notes, answered %lu phrases, sent %lu bytes\n",
               (unsigned long)heard.notes, (unsigned long)state.answers, sent);
    }
    sage_midi_scheduler_free(scheduler);
    sage_jam_free(jam);
    sage_model_free(model);
    close(in);
    close(out);
    return 0;
}
