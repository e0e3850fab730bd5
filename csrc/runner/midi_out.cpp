#include "midi_out.h"

#include <fcntl.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace sage::runner {

MidiOut::~MidiOut() {
    close();
}

int open_midi_device(const std::string& path, int flags, std::string* error) {
    const int fd = ::open(path.c_str(), flags | O_NOCTTY | O_CLOEXEC, 0644);
    if (fd < 0) {
        if (error != nullptr) *error = path + ": " + std::strerror(errno);
        return -1;
    }
    termios tty;
    if (isatty(fd) && tcgetattr(fd, &tty) == 0) {
        cfmakeraw(&tty);
        if (tcsetattr(fd, TCSANOW, &tty) != 0) {
            if (error != nullptr) *error = path + ": cannot set raw mode: " + std::strerror(errno);
            ::close(fd);
            return -1;
        }
    }
    return fd;
}

bool MidiOut::open(const std::string& path, std::string* error) {
    close();
    fd_ = open_midi_device(path, O_WRONLY | O_CREAT | O_TRUNC, error);
    return fd_ >= 0;
}

bool MidiOut::write(const uint8_t* bytes, size_t n, std::string* error) {
    while (n > 0) {
        const ssize_t written = ::write(fd_, bytes, n);
        if (written < 0) {
            if (errno == EINTR) continue;
            *error = std::string("MIDI output: ") + std::strerror(errno);
            return false;
        }
        bytes += written;
        n -= static_cast<size_t>(written);
    }
    return true;
}

void MidiOut::close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
}

}  // namespace sage::runner
