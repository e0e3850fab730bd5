#include "midi_scheduler.h"

#include <algorithm>
#include <cstring>

namespace sage {

namespace {

constexpr int16_t kFreeChannel = -2;
constexpr uint8_t kNoteOff = 0x80, kNoteOn = 0x90, kProgramChange = 0xC0;
constexpr uint8_t kRankOff = 0, kRankProgram = 1, kRankOn = 2;

uint8_t clamp7(int32_t v, int32_t low) {
    return static_cast<uint8_t>(std::min(std::max(v, low), 127));
}

}  // namespace

// Orders the heap so that its front is the earliest message (std heaps keep the largest in front).
bool MidiScheduler::later(const Message& a, const Message& b) {
    if (a.time != b.time) return a.time > b.time;
    if (a.rank != b.rank) return a.rank > b.rank;
    return a.order > b.order;
}

MidiScheduler::MidiScheduler(size_t notes) : capacity_(3 * notes) {
    queue_.reserve(capacity_);
    std::fill(std::begin(program_of_channel_), std::end(program_of_channel_), kFreeChannel);
    std::fill(std::begin(channel_last_used_), std::end(channel_last_used_), 0);
}

void MidiScheduler::push(double time, uint8_t rank, uint8_t status, uint8_t data1, int data2) {
    Message m{};
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

void MidiScheduler::set_program(int channel, int32_t program, double time) {
    if (channel == kMidiDrumChannel || program < 0 || program_of_channel_[channel] == program)
        return;
    program_of_channel_[channel] = static_cast<int16_t>(program);
    channel_last_used_[channel] = order_;
    push(time, kRankProgram, static_cast<uint8_t>(kProgramChange | channel), clamp7(program, 0),
         -1);
}

int MidiScheduler::channel_for(int32_t program, double time) {
    if (program < 0) return kMidiDrumChannel;
    for (int c = 0; c < 16; ++c) {
        if (c != kMidiDrumChannel && program_of_channel_[c] == program) return c;
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
    set_program(channel, program, time);
    return channel;
}

bool MidiScheduler::add(const ScheduledNote& note) {
    if (free_notes() < 1) return false;
    const int channel = note.channel == kMidiAutoChannel ? channel_for(note.program, note.time)
                                                         : note.channel & 0x0F;
    if (note.channel != kMidiAutoChannel) set_program(channel, note.program, note.time);
    const uint8_t pitch = clamp7(note.pitch, 0);
    // Velocity 0 would be a note-off in MIDI, so a note-on plays at least velocity 1.
    push(note.time, kRankOn, static_cast<uint8_t>(kNoteOn | channel), pitch,
         clamp7(note.velocity, 1));
    push(std::max(note.end, note.time), kRankOff, static_cast<uint8_t>(kNoteOff | channel), pitch,
         64);
    return true;
}

size_t MidiScheduler::take_front(uint8_t* out) {
    std::pop_heap(queue_.begin(), queue_.end(), later);
    const Message m = queue_.back();
    queue_.pop_back();
    const int channel = m.bytes[0] & 0x0F;
    const uint8_t kind = m.bytes[0] & 0xF0;
    if (kind == kNoteOn) {
        ++sounding_[channel][m.bytes[1]];
    } else if (kind == kNoteOff && skipped_[channel][m.bytes[1]] > 0) {
        --skipped_[channel][m.bytes[1]];  // its note-on was skipped (skip_before) or released
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

}  // namespace sage
