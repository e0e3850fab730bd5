// The runner's MIDI input (csrc/runner/midi_in.*) on real ptys: a pty whose other side closes ends
// the input (EIO, read's 0), and the path is opened again (--reconnect) once a udev-style symlink
// removed with the device points at a new one; reopening, failed or not, and reading allocate
// nothing, as the runner's loop does them.
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdint>
#include <string>

#include "../runner/midi_in.h"
#include "counting_allocator.h"
#include "testing.h"

namespace {

using sage::runner::MidiIn;
using sage::testing::count_allocations;

// A new pty: its master's descriptor and its slave's path (/dev/pts/N).
int open_pty(std::string* slave) {
    const int master = posix_openpt(O_RDWR | O_NOCTTY);
    CHECK(master >= 0 && grantpt(master) == 0 && unlockpt(master) == 0);
    *slave = ptsname(master);
    return master;
}

void wait_readable(int fd) {
    pollfd p{fd, POLLIN, 0};
    CHECK_EQ(poll(&p, 1, 2000), 1);
}

TEST(a_device_that_comes_back_is_reopened_without_allocating) {
    char folder[] = "/tmp/sage-midi-in-XXXXXX";
    CHECK(mkdtemp(folder) != nullptr);
    const std::string link = std::string(folder) + "/midiC1D0";
    std::string slave, error;
    int master = open_pty(&slave);
    CHECK_EQ(symlink(slave.c_str(), link.c_str()), 0);

    MidiIn in;
    CHECK(in.open(link, &error));
    CHECK(in.character_device());
    const uint8_t note[3] = {0x90, 60, 100};
    uint8_t bytes[16];
    ssize_t n = 0;
    CHECK_EQ(write(master, note, 3), ssize_t{3});
    wait_readable(in.fd());
    CHECK_EQ(count_allocations([&] { n = in.read(bytes, sizeof bytes, &error); }), 0L);
    CHECK_EQ(n, ssize_t{3});

    // Unplugged: the link goes, the device's other side closes; reading ends (EIO).
    CHECK_EQ(unlink(link.c_str()), 0);
    CHECK_EQ(close(master), 0);
    wait_readable(in.fd());
    CHECK_EQ(count_allocations([&] { n = in.read(bytes, sizeof bytes, &error); }), 0L);
    CHECK_EQ(n, ssize_t{0});
    in.close();
    bool opened = true;
    CHECK_EQ(count_allocations([&] { opened = in.reopen(); }), 0L);
    CHECK(!opened && in.fd() < 0);
    MidiIn other;  // opening with a message to write allocates: the count sees allocations
    CHECK(count_allocations([&] { opened = other.open(link, &error); }) > 0);
    CHECK(!opened);

    // Plugged in again: the link points at a new pty.
    master = open_pty(&slave);
    CHECK_EQ(symlink(slave.c_str(), link.c_str()), 0);
    CHECK_EQ(count_allocations([&] { opened = in.reopen(); }), 0L);
    CHECK(opened && in.fd() >= 0);
    CHECK_EQ(write(master, note, 3), ssize_t{3});
    wait_readable(in.fd());
    CHECK_EQ(in.read(bytes, sizeof bytes, &error), ssize_t{3});
    CHECK_EQ(in.read(bytes, sizeof bytes, &error), MidiIn::kNothing);

    in.close();
    close(master);
    unlink(link.c_str());
    rmdir(folder);
}

TEST(a_regular_file_is_not_a_character_device) {
    char path[] = "/tmp/sage-midi-in-file-XXXXXX";
    const int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    MidiIn in;
    std::string error;
    CHECK(in.open(path, &error));
    CHECK(!in.character_device());
    uint8_t bytes[4];
    CHECK_EQ(in.read(bytes, sizeof bytes, &error), ssize_t{0});  // its end
    in.close();
    unlink(path);
}

}  // namespace

SAGE_TEST_MAIN()
