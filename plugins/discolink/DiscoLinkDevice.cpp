/*
 * discoLink Device -- a DAW effect that publishes its track as a discoLink device (DPF: VST3
 * and LV2 from this one source; builds in plugins/build.sh, user guide in docs/native.md).
 *
 * - Audio passes through unchanged, and the same frames go to the device's audio ring
 *   while a host holds the claim. The DAW's process call is the clock (fill_blocks 0): each
 *   run() writes the frames it brings, at the DAW's rate and block size.
 * - The host's MIDI comes out of the plugin's MIDI output, at each event's frame offset.
 * - The device registers as "Track:N" (the lowest free N), or as exactly the id kept in the
 *   plugin state ("device"), so that a reloaded project is found again by its hosts under
 *   the same id. If that id is still held by a live device, the worker retries until it is
 *   free.
 *
 * Threads: run() calls only the SDK's real-time functions. Registering, restarting after
 * a rate change or a lost slot, and deregistering happen on the worker thread.
 */

#include "DistrhoPlugin.hpp"
#include "DiscoLinkWorker.hpp"
#include "discolink.h"

#include <atomic>
#include <cstdio>
#include <cstring>
#include <string>

START_NAMESPACE_DISTRHO

static constexpr const char* kDefaultName = "Track";
static constexpr uint32_t kMaxMidiOut = 512;     // DPF's own limit per run()
static constexpr uint32_t kSysexPool = 16384;    // bytes of SysEx that one run() can emit
static constexpr int kRetryMs = 250;

class DiscoLinkDevice : public Plugin, private DiscoLinkWorker
{
public:
    DiscoLinkDevice()
        : Plugin(0, 0, 1)
    {
        std::memset(fHeld, 0, sizeof(fHeld));
        dl_device_config config = dl_device_config_init();
        config.id = kDefaultName;
        config.channels = DISTRHO_PLUGIN_NUM_OUTPUTS;
        config.sample_rate = static_cast<uint32_t>(getSampleRate() + 0.5);
        config.block_size = clampBlock(getBufferSize());
        config.fill_blocks = 0;  // the DAW's process call is the clock
        config.on_midi = onMidi;
        config.on_event = onEvent;
        config.user_data = this;
        if (dl_device_create(&config, &fDevice) != DL_SUCCESS)
        {
            d_stderr2("discoLink Device: cannot create the device (out of memory)");
            fDevice = nullptr;
        }
        if (fDevice != nullptr && !isDummyInstance())
            startWorker(kRetryMs);
    }

    ~DiscoLinkDevice() override
    {
        stopWorker();
        dl_device_destroy(fDevice);  // STOPPED, deregistered, segment removed
    }

protected:
    const char* getLabel() const override { return DISTRHO_PLUGIN_NAME; }
    const char* getDescription() const override
    {
        return "Publishes this track as a discoLink device: its audio goes to the device's "
               "ring, the host's MIDI comes out of the MIDI output.";
    }
    const char* getMaker() const override { return "discolink-bridge"; }
    const char* getHomePage() const override { return ""; }
    const char* getLicense() const override { return "MIT"; }
    uint32_t getVersion() const override { return d_version(1, 0, 0); }
    int64_t getUniqueId() const override { return d_cconst('D', 'L', 'd', '2'); }

    void initState(uint32_t, State& state) override
    {
        state.hints = kStateIsOnlyForDSP;
        state.key = "device";
        state.label = "Device id";
        state.defaultValue = "";
    }

    /* A reloaded project: register again as exactly this Name:N. */
    void setState(const char* key, const char* value) override
    {
        if (std::strcmp(key, "device") != 0 || value == nullptr || value[0] == '\0')
            return;
        {
            std::lock_guard<std::mutex> lock(mutex);
            if (fWantedId == value)
                return;
            fWantedId = value;
            fRestart = true;
        }
        wake();
    }

    String getState(const char* key) const override
    {
        std::lock_guard<std::mutex> lock(const_cast<std::mutex&>(mutex));
        return std::strcmp(key, "device") == 0 ? String(fWantedId.c_str()) : String();
    }

    void activate() override
    {
        {
            std::lock_guard<std::mutex> lock(mutex);
            markActivated();
            const uint32_t rate = static_cast<uint32_t>(getSampleRate() + 0.5);
            const uint32_t block = clampBlock(getBufferSize());
            if (rate != fSampleRate || block != fBlockSize)
            {
                fSampleRate = rate;
                fBlockSize = block;
                fRestart = true;
            }
        }
        wake();
    }

    void run(const float** inputs, float** outputs, uint32_t frames) override
    {
        fFrames = frames;
        fMidiCount = 0;
        fSysexUsed = 0;
        dl_device_process_commands(fDevice);  // MIDI arrives in onMidi()
        if (dl_device_claimed(fDevice))
            dl_device_write_audio(fDevice, inputs, frames);
        for (uint32_t c = 0; c < DISTRHO_PLUGIN_NUM_OUTPUTS; ++c)
            if (outputs[c] != inputs[c])
                std::memcpy(outputs[c], inputs[c], sizeof(float) * frames);
        // MIDI output in frame order (a stable insertion sort: a block holds few events)
        for (uint32_t i = 1; i < fMidiCount; ++i)
            for (uint32_t j = i; j > 0 && fMidiOut[j - 1].frame > fMidiOut[j].frame; --j)
            {
                const MidiEvent swap = fMidiOut[j];
                fMidiOut[j] = fMidiOut[j - 1];
                fMidiOut[j - 1] = swap;
            }
        for (uint32_t i = 0; i < fMidiCount; ++i)
            writeMidiEvent(fMidiOut[i]);
    }

private:
    static uint32_t clampBlock(uint32_t block)
    {
        return block < DL_BLOCK_SIZE_MIN ? DL_BLOCK_SIZE_MIN
             : block > DL_BLOCK_SIZE_MAX ? DL_BLOCK_SIZE_MAX : block;
    }

    /* -- worker thread -- */
    void tick() override
    {
        if (fDevice == nullptr)
            return;
        std::string wanted;
        uint32_t rate, block;
        bool restart;
        {
            std::lock_guard<std::mutex> lock(mutex);
            wanted = fWantedId;
            rate = fSampleRate;
            block = fBlockSize;
            restart = fRestart;
            fRestart = false;
        }
        if (rate == 0)
            return;  // not activated yet
        if (!settled())
        {
            std::lock_guard<std::mutex> lock(mutex);
            fRestart = fRestart || restart;  // still to do at the next tick
            return;
        }
        const bool running = dl_device_running(fDevice) != 0;
        if (running && dl_device_registered(fDevice) == 0)
            report(std::string("lost its registry slot (stalled); registering again as ") + wanted);
        else if (running && !restart)
            return;
        if (running)
            dl_device_stop(fDevice);  // hosts see STOPPED and recall us after the restart
        dl_device_set_format(fDevice, rate, block);
        const dl_result idResult = dl_device_set_id(fDevice, wanted.empty() ? kDefaultName : wanted.c_str());
        if (idResult != DL_SUCCESS)
        {
            report(std::string("saved device id refused: ") + dl_device_error(fDevice));
            return;
        }
        if (dl_device_start(fDevice) != DL_SUCCESS)
        {
            report(dl_device_error(fDevice));
            return;
        }
        {
            std::lock_guard<std::mutex> lock(mutex);
            fWantedId = dl_device_id(fDevice);  // kept in the state from now on
        }
        char line[160];
        std::snprintf(line, sizeof(line), "registered as %s (%u Hz, %u frames)",
                      dl_device_id(fDevice), rate, block);
        report(line);
    }

    void report(const std::string& line)
    {
        if (line == fLastReport)
            return;
        fLastReport = line;
        std::fprintf(stderr, "discoLink Device: %s\n", line.c_str());
    }

    /* -- audio thread (inside dl_device_process_commands) -- */
    static void onMidi(dl_device*, uint32_t offset, const uint8_t* data, uint32_t size, void* user)
    {
        static_cast<DiscoLinkDevice*>(user)->queueMidi(offset, data, size);
    }

    static void onEvent(dl_device*, const dl_device_event* event, void* user)
    {
        // a host that leaves, dies or is replaced must not leave notes hanging on our output
        if (event->kind == DL_EVENT_CLAIMED || event->kind == DL_EVENT_HOST_LEFT
            || event->kind == DL_EVENT_HOST_DIED)
            static_cast<DiscoLinkDevice*>(user)->releaseHeldNotes();
    }

    void queueMidi(uint32_t offset, const uint8_t* data, uint32_t size)
    {
        if (fMidiCount == kMaxMidiOut || size == 0)
            return;
        MidiEvent& event = fMidiOut[fMidiCount];
        event.frame = offset < fFrames ? offset : (fFrames > 0 ? fFrames - 1 : 0);
        event.size = size;
        event.dataExt = nullptr;
        if (size <= MidiEvent::kDataSize)
        {
            std::memset(event.data, 0, sizeof(event.data));
            std::memcpy(event.data, data, size);
            const uint8_t status = data[0] & 0xF0, channel = data[0] & 0x0F;
            if (status == 0x90 && size == 3)
                fHeld[channel][data[1] & 0x7F] = data[2] != 0;
            else if (status == 0x80 && size == 3)
                fHeld[channel][data[1] & 0x7F] = 0;
        }
        else
        {
            if (fSysexUsed + size > kSysexPool)
                return;  // more SysEx than one block can carry: dropped, like a full cable
            std::memcpy(fSysex + fSysexUsed, data, size);
            event.dataExt = fSysex + fSysexUsed;
            fSysexUsed += size;
        }
        fMidiCount++;
    }

    void releaseHeldNotes()
    {
        for (uint8_t channel = 0; channel < 16; ++channel)
            for (uint8_t note = 0; note < 128; ++note)
                if (fHeld[channel][note])
                {
                    const uint8_t off[3] = {static_cast<uint8_t>(0x80 | channel), note, 0};
                    fHeld[channel][note] = 0;
                    queueMidi(0, off, 3);
                }
    }

    dl_device* fDevice = nullptr;

    // handed over by the DAW's main thread under `mutex`
    std::string fWantedId;
    uint32_t fSampleRate = 0, fBlockSize = 0;
    bool fRestart = false;

    // worker thread only
    std::string fLastReport;

    // audio thread only
    uint32_t fFrames = 0, fMidiCount = 0, fSysexUsed = 0;
    MidiEvent fMidiOut[kMaxMidiOut];
    uint8_t fSysex[kSysexPool];
    uint8_t fHeld[16][128];

    DISTRHO_DECLARE_NON_COPYABLE_WITH_LEAK_DETECTOR(DiscoLinkDevice)
};

Plugin* createPlugin()
{
    return new DiscoLinkDevice();
}

END_NAMESPACE_DISTRHO
