#include "midi_out.h"

#include <fcntl.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace sage::runner {

namespace {

constexpr int16_t kFreeChannel = -2;
constexpr uint8_t kNoteOff = 0x80, kNoteOn = 0x90, kProgramChange = 0xC0;
constexpr uint8_t kRankOff = 0, kRankProgram = 1, kRankOn = 2;

// Orders the heap so that its front is the earliest message (std heaps keep the largest in front).
bool later(const TimedMessage& a, const TimedMessage& b) {
    if (a.time != b.time) return a.time > b.time;
    if (a.rank != b.rank) return a.rank > b.rank;
    return a.order > b.order;
}

uint8_t clamp7(int32_t v, int32_t low) {
    return static_cast<uint8_t>(std::min(std::max(v, low), 127));
}

}  // namespace

MidiScheduler::MidiScheduler(size_t capacity) : capacity_(capacity) {
    queue_.reserve(capacity);
    std::fill(std::begin(program_of_channel_), std::end(program_of_channel_), kFreeChannel);
    std::fill(std::begin(channel_last_used_), std::end(channel_last_used_), 0);
}

void MidiScheduler::push(double time, uint8_t rank, uint8_t status, uint8_t data1, int data2) {
    TimedMessage m{};
    m.time = time;
    m.rank = rank;
    m.order = order_++;
    m.bytes[0] = status;
    m.bytes[1] = data1;
    m.size = 2;
    if (data2 >= 0) {
        m.bytes[2] = static_cast<uint8_t>(data2);
        m.size = 3;
    }
    queue_.push_back(m);  // within the reserved capacity: add() checked the room
    std::push_heap(queue_.begin(), queue_.end(), later);
}

int MidiScheduler::channel_for(int32_t program, double time) {
    if (program < 0) return kMidiDrumChannel;
    for (int c = 0; c < 16; ++c) {
        if (program_of_channel_[c] == program) return c;
    }
    // A free melodic channel, else the one whose program was assigned longest ago.
    int channel = -1;
    for (int c = 0; c < 16 && channel < 0; ++c) {
        if (c != kMidiDrumChannel && program_of_channel_[c] == kFreeChannel) channel = c;
    }
    if (channel < 0) {
        channel = kMidiDrumChannel == 0 ? 1 : 0;
        for (int c = 0; c < 16; ++c) {
            if (c != kMidiDrumChannel && channel_last_used_[c] < channel_last_used_[channel])
                channel = c;
        }
    }
    program_of_channel_[channel] = static_cast<int16_t>(program);
    channel_last_used_[channel] = order_;
    push(time, kRankProgram, static_cast<uint8_t>(kProgramChange | channel), clamp7(program, 0),
         -1);
    return channel;
}

bool MidiScheduler::add(const sage_note_event& note) {
    if (free_slots() < 3) return false;
    const int channel = channel_for(note.program, note.time);
    const uint8_t pitch = clamp7(note.pitch, 0);
    // Velocity 0 would be a note-off in MIDI, so a note-on plays at least velocity 1.
    push(note.time, kRankOn, static_cast<uint8_t>(kNoteOn | channel), pitch,
         clamp7(note.velocity, 1));
    push(note.time + std::max(note.duration, 0.0), kRankOff,
         static_cast<uint8_t>(kNoteOff | channel), pitch, 64);
    return true;
}

size_t MidiScheduler::take_front(uint8_t* out) {
    std::pop_heap(queue_.begin(), queue_.end(), later);
    const TimedMessage m = queue_.back();
    queue_.pop_back();
    const int channel = m.bytes[0] & 0x0F;
    const uint8_t kind = m.bytes[0] & 0xF0;
    if (kind == kNoteOn) {
        ++sounding_[channel][m.bytes[1]];
    } else if (kind == kNoteOff && skipped_[channel][m.bytes[1]] > 0) {
        --skipped_[channel][m.bytes[1]];  // its note-on was skipped (skip_before)
        return 0;
    } else if (kind == kNoteOff) {
        uint16_t& count = sounding_[channel][m.bytes[1]];
        if (count > 0) --count;
        if (count > 0) return 0;  // another note of this pitch still sounds: keep it
    }
    std::memcpy(out, m.bytes, m.size);
    return m.size;
}

size_t MidiScheduler::take_due(double time, uint8_t* out, size_t capacity) {
    size_t written = 0;
    while (!queue_.empty() && queue_.front().time <= time &&
           written + queue_.front().size <= capacity)
        written += take_front(out + written);
    return written;
}

size_t MidiScheduler::skip_before(double time, uint8_t* out, size_t capacity) {
    size_t written = 0;
    while (!queue_.empty() && queue_.front().time < time &&
           written + queue_.front().size <= capacity) {
        const uint8_t* bytes = queue_.front().bytes;
        if ((bytes[0] & 0xF0) == kNoteOn) {
            ++skipped_[bytes[0] & 0x0F][bytes[1]];
            std::pop_heap(queue_.begin(), queue_.end(), later);
            queue_.pop_back();
            continue;
        }
        written += take_front(out + written);
    }
    return written;
}

size_t MidiScheduler::release(uint8_t* out, size_t capacity) {
    size_t written = 0;
    for (int channel = 0; channel < 16; ++channel) {
        for (int pitch = 0; pitch < 128; ++pitch) {
            if (sounding_[channel][pitch] == 0 || written + 3 > capacity) continue;
            skipped_[channel][pitch] += sounding_[channel][pitch];  // their note-offs are queued
            sounding_[channel][pitch] = 0;
            out[written++] = static_cast<uint8_t>(kNoteOff | channel);
            out[written++] = static_cast<uint8_t>(pitch);
            out[written++] = 64;
        }
    }
    return written;
}

size_t MidiScheduler::silence(uint8_t* out, size_t capacity) {
    queue_.clear();
    const size_t written = release(out, capacity);
    std::memset(skipped_, 0, sizeof skipped_);
    return written;
}

MidiOut::~MidiOut() {
    close();
}

int open_midi_device(const std::string& path, int flags, std::string* error) {
    const int fd = ::open(path.c_str(), flags | O_NOCTTY | O_CLOEXEC, 0644);
    if (fd < 0) {
        *error = path + ": " + std::strerror(errno);
        return -1;
    }
    termios tty;
    if (isatty(fd) && tcgetattr(fd, &tty) == 0) {
        cfmakeraw(&tty);
        if (tcsetattr(fd, TCSANOW, &tty) != 0) {
            *error = path + ": cannot set raw mode: " + std::strerror(errno);
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
