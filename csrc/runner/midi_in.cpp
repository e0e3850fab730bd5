#include "midi_in.h"

#include <fcntl.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace sage::runner {

MidiIn::~MidiIn() {
    close();
}

bool MidiIn::open(const std::string& path, std::string* error) {
    close();
    fd_ = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd_ < 0) {
        *error = path + ": " + std::strerror(errno);
        return false;
    }
    if (isatty(fd_)) {
        termios tty;
        if (tcgetattr(fd_, &tty) == 0) {
            cfmakeraw(&tty);
            if (tcsetattr(fd_, TCSANOW, &tty) != 0) {
                *error = path + ": cannot set raw mode: " + std::strerror(errno);
                close();
                return false;
            }
        }
    }
    return true;
}

ssize_t MidiIn::read(uint8_t* bytes, size_t capacity, std::string* error) {
    for (;;) {
        const ssize_t n = ::read(fd_, bytes, capacity);
        if (n >= 0) return n;
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return -1;
        if (errno == EIO) return 0;  // a pty whose other side closed
        *error = std::string("MIDI input: ") + std::strerror(errno);
        return -2;
    }
}

void MidiIn::close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
}

}  // namespace sage::runner
