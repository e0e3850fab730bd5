#include "midi_in.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "midi_out.h"

namespace sage::runner {

MidiIn::~MidiIn() {
    close();
}

bool MidiIn::open(const std::string& path, std::string* error) {
    close();
    path_ = path;
    fd_ = open_midi_device(path_, O_RDONLY | O_NONBLOCK, error);
    struct stat st{};
    character_device_ = fd_ >= 0 && fstat(fd_, &st) == 0 && S_ISCHR(st.st_mode);
    return fd_ >= 0;
}

bool MidiIn::reopen() {
    close();
    fd_ = open_midi_device(path_, O_RDONLY | O_NONBLOCK, nullptr);
    return fd_ >= 0;
}

ssize_t MidiIn::read(uint8_t* bytes, size_t capacity, std::string* error) {
    for (;;) {
        const ssize_t n = ::read(fd_, bytes, capacity);
        if (n >= 0) return n;
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return kNothing;
        if (errno == EIO) return 0;  // a pty whose other side closed
        if (errno == ENODEV || errno == ENXIO) return kRemoved;
        *error = std::string("MIDI input: ") + std::strerror(errno);
        return kError;
    }
}

void MidiIn::close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
}

}  // namespace sage::runner
