/* answer_midi: call and response on MIDI devices, on the sage-edge C API (C99 + POSIX).
 *
 *   answer_midi MODEL.sage IN OUT [BPM] [PROGRAM]
 *
 * Reads a musician's MIDI bytes from IN (a USB MIDI device such as /dev/snd/midiC1D0, a serial
 * port or a pty), and after each phrase of 2 bars answers 2 bars on PROGRAM (default 42, cello)
 * to OUT, at BPM (default 120) in 4/4 from the moment it starts. Bytes go to the jam's live
 * encoder stamped with the monotonic clock; the engine's jam player polls the jam and says which
 * bytes are due, and how long to wait for input until it is called again. When IN ends, it plays
 * on until the last phrase has been answered. Nothing is allocated after the jam and the player
 * are created.
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

/* Writes every message the player says is due at `now`. */
static void send_due(sage_jam_player* player, int out, int64_t now) {
    unsigned char bytes[256];
    size_t n = 0;
    do {
        sage_jam_player_take_due(player, now, bytes, sizeof bytes, &n);
        if (n > 0 && write(out, bytes, n) != (ssize_t)n) perror("write");
        sent += n;
    } while (n > 0);
}

static int fail(const char* what) {
    fprintf(stderr, "answer_midi: %s: %s\n", what, sage_last_error());
    return 1;
}

int main(int argc, char** argv) {
    sage_model* model = NULL;
    sage_jam* jam = NULL;
    sage_live* live = NULL;
    sage_jam_player* player = NULL;
    sage_jam_player_state played;
    sage_jam_options options = sage_jam_options_default();
    sage_jam_note notes[64];
    unsigned char bytes[256];
    size_t count = 0;
    int in, out, input_open = 1;
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
    if (sage_jam_create(model, &options, &jam) != SAGE_OK) return fail("jam");
    if (sage_jam_player_create(jam, 0, &player) != SAGE_OK) return fail("player");
    sage_jam_get_live(jam, &live);

    for (;;) {
        int64_t now = now_us(), wait_us = 0;
        struct timespec wait;
        ssize_t n = -1;
        while (input_open && (n = read(in, bytes, sizeof bytes)) != 0) {
            if (n < 0) break; /* nothing waiting */
            sage_live_midi(live, now, bytes, (size_t)n);
        }
        if (input_open && n == 0) input_open = 0, sage_jam_player_input_ended(player, now);
        do { /* the notes are queued in the player; a program could print them */
            if (sage_jam_player_poll(player, now, notes, 64, &count) != SAGE_OK)
                return fail("poll");
        } while (count == 64);
        send_due(player, out, now_us());
        sage_jam_player_get_state(player, &played);
        if (played.done) break; /* the input ended and the last answer has been played */
        sage_jam_player_wait(player, now_us(), &wait_us); /* 1 ms at most */
        wait.tv_sec = 0;
        wait.tv_nsec = (long)wait_us * 1000;
        nanosleep(&wait, NULL);
    }
    do { /* nothing sounds after the end */
        sage_jam_player_stop(player, bytes, sizeof bytes, &count);
        if (count > 0 && write(out, bytes, count) != (ssize_t)count) perror("write");
    } while (count > 0);
    {
        sage_live_counts heard;
        sage_jam_state state;
        sage_live_get_counts(live, &heard);
        sage_jam_get_state(jam, &state);
        printf("answer_midi: heard %lu notes, answered %lu phrases, sent %lu bytes\n",
               (unsigned long)heard.notes, (unsigned long)state.answers, sent);
    }
    sage_jam_player_free(player);
    sage_jam_free(jam);
    sage_model_free(model);
    close(in);
    close(out);
    return 0;
}
