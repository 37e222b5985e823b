/*
 * discoLink Host -- a DAW instrument that plays a discoLink device running in another process
 * (DPF: VST3 and LV2 from this one source; builds in plugins/build.sh, user guide in
 * docs/native.md).
 *
 * The DAW's MIDI goes to the device at each event's frame offset; the device's audio comes
 * back on the plugin's outputs, zero-filled while there is no link. The effect-insert build
 * (DL_INSERT) also sends the track's input to the device through the return ring, and the
 * device's (wet) audio replaces it.
 *
 * Choosing the device (on the worker thread, never in run()):
 *   - state "device" / "link_tag" set (a saved session): recall -- the device whose registry
 *     slot carries our link tag, else the one registered under the saved id;
 *   - no saved device: $DISCOLINK_DEVICE if set, else the first unclaimed device of
 *     $DISCOLINK_NAMESPACE;
 *   - after a link is lost (device killed, stopped, silent): the same recall, every 250 ms,
 *     until the device is back under the same id or link tag. Notes the DAW still holds are
 *     played again on the new link, so a held note sounds again when its device returns.
 * The handshake asks for the DAW's sample rate and block size; the plugin reports
 * fill x block (+ the device's own latency) to the DAW as its latency.
 *
 * Threads: run() calls only the SDK's real-time functions (no allocation, lock or blocking
 * call). The worker (DiscoLinkWorker) connects; it and run() share atomics only.
 */

#include "DistrhoPlugin.hpp"
#include "DiscoLinkWorker.hpp"
#include "discolink.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>

#ifndef DL_EMPTY
# define DL_EMPTY 0
#endif

START_NAMESPACE_DISTRHO

static constexpr uint32_t kStateDevice = 0;
static constexpr uint32_t kStateLinkTag = 1;
static constexpr uint32_t kStateCount = 2;
static constexpr int kRetryMs = 250;

class DiscoLinkHost : public Plugin, private DiscoLinkWorker
{
public:
    DiscoLinkHost()
        : Plugin(0, 0, kStateCount)
    {
        std::memset(fHeld, 0, sizeof(fHeld));
        fLinkTag = newLinkTag();
        dl_host_config config = dl_host_config_init();
        config.link_tag = fLinkTag.c_str();
        config.return_audio = DL_INSERT;
        config.channels = DISTRHO_PLUGIN_NUM_OUTPUTS;
        if (dl_host_create(&config, &fHost) != DL_SUCCESS)
        {
            d_stderr2("discoLink Host: cannot create the host (out of memory)");
            fHost = nullptr;
        }
        if (fHost != nullptr && !isDummyInstance() && !DL_EMPTY)
            startWorker(kRetryMs);
    }

    ~DiscoLinkHost() override
    {
        stopWorker();
        dl_host_destroy(fHost);  // sends Disconnect and releases the claim
    }

protected:
    const char* getLabel() const override { return DISTRHO_PLUGIN_NAME; }
    const char* getDescription() const override
    {
        return "Plays a discoLink device running in another process: MIDI goes out, its audio "
               "comes back.";
    }
    const char* getMaker() const override { return "discolink-bridge"; }
    const char* getHomePage() const override { return ""; }
    const char* getLicense() const override { return "MIT"; }
    uint32_t getVersion() const override { return d_version(1, 0, 0); }
    int64_t getUniqueId() const override
    {
#if DL_EMPTY
        return d_cconst('D', 'L', 'e', '0');
#elif DL_INSERT
        return d_cconst('D', 'L', 'h', 'X');
#elif DISTRHO_PLUGIN_NUM_OUTPUTS == 12
        return d_cconst('D', 'L', 'h', 'C');
#else
        return d_cconst('D', 'L', 'h', '2');
#endif
    }

    void initState(uint32_t index, State& state) override
    {
        state.hints = kStateIsOnlyForDSP;
        if (index == kStateDevice)
        {
            state.key = "device";
            state.label = "Device id";
        }
        else
        {
            state.key = "link_tag";
            state.label = "Link tag";
        }
        state.defaultValue = "";
    }

    /* The DAW restores a session: the next connect recalls this device / link tag. */
    void setState(const char* key, const char* value) override
    {
        if (value == nullptr || value[0] == '\0')
            return;  // an empty value is "nothing saved": keep what we have
        {
            std::lock_guard<std::mutex> lock(mutex);
            std::string& field = std::strcmp(key, "device") == 0 ? fDeviceId : fLinkTag;
            if (field == value)
                return;
            field = value;
            fRelink = true;
        }
        wake();
    }

    String getState(const char* key) const override
    {
        std::lock_guard<std::mutex> lock(const_cast<std::mutex&>(mutex));
        if (std::strcmp(key, "device") == 0)
            return String(fDeviceId.c_str());
        if (std::strcmp(key, "link_tag") == 0)
            return String(fLinkTag.c_str());
        return String();
    }

    /* The DAW's rate and block size are known here: the handshake asks for them. */
    void activate() override
    {
        // A (re)activation is a transport reset: notes from before it end (run() is not
        // running now, so the audio thread's fields may be touched here).
        std::memset(fHeld, 0, sizeof(fHeld));
        fAllNotesOff = true;
        {
            std::lock_guard<std::mutex> lock(mutex);
            markActivated();
            const uint32_t rate = static_cast<uint32_t>(getSampleRate() + 0.5);
            const uint32_t block = getBufferSize();
            if (rate != fSampleRate || block != fBlockSize)
            {
                fSampleRate = rate;
                fBlockSize = block;
                fRelink = true;
                // the current link's audio is in the old format: silence until the new one
                fMutedGeneration = fSeenGeneration;
                fMuted = true;
            }
        }
        wake();
    }

    void run(const float** inputs, float** outputs, uint32_t frames,
             const MidiEvent* midiEvents, uint32_t midiEventCount) override
    {
#if DL_EMPTY
        // the benchmark's baseline: the same DPF plugin doing nothing but writing silence
        (void)inputs, (void)midiEvents, (void)midiEventCount;
        for (uint32_t c = 0; c < DISTRHO_PLUGIN_NUM_OUTPUTS; ++c)
            std::memset(outputs[c], 0, sizeof(float) * frames);
        return;
#endif
        const uint32_t generation = fConnectGeneration.load(std::memory_order_acquire);
        if (generation != fSeenGeneration)
        {
            fSeenGeneration = generation;
            replayHeldNotes();
        }
        if (fAllNotesOff)
        {
            fAllNotesOff = false;
            for (uint8_t channel = 0; channel < 16; ++channel)
            {
                const uint8_t off[3] = {static_cast<uint8_t>(0xB0 | channel), 123, 0};
                dl_host_send_midi(fHost, off, 3, 0);
            }
        }
        for (uint32_t i = 0; i < midiEventCount; ++i)
        {
            const MidiEvent& event = midiEvents[i];
            const uint8_t* data = event.size > MidiEvent::kDataSize ? event.dataExt : event.data;
            if (data == nullptr || event.size == 0)
                continue;
            trackHeldNotes(data, event.size);
            if ((data[0] & 0xF0) == 0xE0 && event.size == 3 && (data[1] | data[2]) > 0x7F)
            {
                // DPF's VST3 wrapper turns a full-scale bend (normalized 1.0) into 16384, one
                // past the top; the top is what the DAW meant
                const uint8_t bend[3] = {data[0], 0x7F, 0x7F};
                dl_host_send_midi(fHost, bend, 3, event.frame);
                continue;
            }
            dl_host_send_midi(fHost, data, event.size, event.frame);
        }
#if DL_INSERT
        dl_host_write_return(fHost, inputs, DISTRHO_PLUGIN_NUM_INPUTS, frames);
#else
        (void)inputs;
#endif
        dl_host_read_audio(fHost, outputs, DISTRHO_PLUGIN_NUM_OUTPUTS, frames);
        if (fMuted)
        {
            if (generation != fMutedGeneration)
                fMuted = false;
            else
                for (uint32_t c = 0; c < DISTRHO_PLUGIN_NUM_OUTPUTS; ++c)
                    std::memset(outputs[c], 0, sizeof(float) * frames);
        }
        dl_host_process_responses(fHost);
        fLinkUp.store(dl_host_connected(fHost) != 0, std::memory_order_relaxed);
        fLinkGenerationSeen.store(generation, std::memory_order_release);

        const uint32_t latency = fLatency.load(std::memory_order_relaxed);
        if (latency != fReportedLatency)
        {
            fReportedLatency = latency;
            setLatency(latency);  // DPF passes it to the DAW after this run()
        }
    }

private:
    /* -- worker thread -- */
    void tick() override
    {
        if (fHost == nullptr)
            return;
        std::string deviceId, linkTag;
        uint32_t rate, block;
        bool relink;
        {
            std::lock_guard<std::mutex> lock(mutex);
            deviceId = fDeviceId;
            linkTag = fLinkTag;
            rate = fSampleRate;
            block = fBlockSize;
            relink = fRelink;
            fRelink = false;
        }
        if (rate == 0)
            return;  // not activated yet: the format is unknown
        if (!settled())
        {
            std::lock_guard<std::mutex> lock(mutex);
            fRelink = fRelink || relink;  // still to do at the next tick
            return;
        }
        if (fConnected && !relink
            && fLinkGenerationSeen.load(std::memory_order_acquire) == fGeneration
            && !fLinkUp.load(std::memory_order_relaxed))
        {
            fConnected = false;  // run() saw the link end
            report(std::string("lost ") + deviceId + ": " + dl_host_disconnect_reason(fHost));
        }
        if (fConnected && relink)
        {
            dl_host_disconnect(fHost);  // a new format or a restored session: handshake again
            fConnected = false;
        }
        if (fConnected)
            return;
        dl_host_set_format(fHost, rate, block);
        if (dl_host_set_link_tag(fHost, linkTag.c_str()) != DL_SUCCESS)
        {
            report(std::string("saved link tag refused: ") + dl_host_error(fHost));
            return;
        }
        dl_result result;
        const char* chosen = std::getenv("DISCOLINK_DEVICE");
        if (!deviceId.empty())
            result = dl_host_recall(fHost, nullptr, deviceId.c_str());
        else if (chosen != nullptr && chosen[0] != '\0')
            result = dl_host_connect(fHost, chosen);
        else
            result = connectFirstFree();
        if (result != DL_SUCCESS)
        {
            report(dl_host_error(fHost));
            return;
        }
        const dl_connection* connection = dl_host_connection(fHost);
        {
            std::lock_guard<std::mutex> lock(mutex);
            fDeviceId = connection->device_id;  // saved with the session from now on
        }
        fLatency.store(dl_host_latency_frames(fHost), std::memory_order_relaxed);
        fConnected = true;
        fGeneration++;
        fConnectGeneration.store(fGeneration, std::memory_order_release);
        char line[256];
        std::snprintf(line, sizeof(line), "connected to %s (%u Hz, %u frames, %u channels, latency %u frames)",
                      connection->device_id, connection->sample_rate, connection->block_size,
                      connection->channels, dl_host_latency_frames(fHost));
        report(line);
    }

    dl_result connectFirstFree()
    {
        dl_device_info devices[DL_REGISTRY_SLOTS];
        uint32_t count = 0;
        const dl_result result = dl_host_scan(fHost, devices, DL_REGISTRY_SLOTS, &count);
        if (result != DL_SUCCESS)
            return result;
        for (uint32_t i = 0; i < count; ++i)
            if (!devices[i].claimed && devices[i].channels > 0)
                return dl_host_connect_info(fHost, &devices[i]);
        return DL_NOT_FOUND;
    }

    /* One stderr line per change of news, so a retry loop does not flood the DAW's log. */
    void report(const std::string& line)
    {
        if (line == fLastReport)
            return;
        fLastReport = line;
        std::fprintf(stderr, "discoLink Host: %s\n", line.c_str());
    }

    static std::string newLinkTag()
    {
        std::random_device random;
        char tag[32];
        std::snprintf(tag, sizeof(tag), "dlhost-%08x%04x", random(), random() & 0xffffu);
        return tag;
    }

    /* -- audio thread -- */
    void trackHeldNotes(const uint8_t* data, uint32_t size)
    {
        const uint8_t status = data[0] & 0xF0, channel = data[0] & 0x0F;
        if (status == 0x90 && size >= 3)
            fHeld[channel][data[1] & 0x7F] = data[2] & 0x7F;
        else if (status == 0x80 && size >= 3)
            fHeld[channel][data[1] & 0x7F] = 0;
        else if (status == 0xB0 && size >= 3 && (data[1] == 120 || data[1] == 123))
            std::memset(fHeld[channel], 0, sizeof(fHeld[channel]));
    }

    /* A new link (first connect or a reconnect): the device starts silent, so the notes the
       DAW still holds are played again at the start of this block. */
    void replayHeldNotes()
    {
        for (uint8_t channel = 0; channel < 16; ++channel)
            for (uint8_t note = 0; note < 128; ++note)
                if (fHeld[channel][note] != 0)
                {
                    const uint8_t on[3] = {static_cast<uint8_t>(0x90 | channel), note, fHeld[channel][note]};
                    dl_host_send_midi(fHost, on, 3, 0);
                }
    }

    dl_host* fHost = nullptr;

    // handed over by the DAW's main thread under `mutex`
    std::string fDeviceId, fLinkTag;
    uint32_t fSampleRate = 0, fBlockSize = 0;
    bool fRelink = false;

    // worker thread only
    bool fConnected = false;
    uint32_t fGeneration = 0;
    std::string fLastReport;

    // worker -> audio thread
    std::atomic<uint32_t> fConnectGeneration{0};
    std::atomic<uint32_t> fLatency{0};
    // audio thread -> worker: the link as the last run() saw it, and for which connect
    std::atomic<bool> fLinkUp{false};
    std::atomic<uint32_t> fLinkGenerationSeen{0};

    // audio thread only
    uint32_t fSeenGeneration = 0;
    uint32_t fReportedLatency = 0;
    bool fAllNotesOff = false;
    bool fMuted = false;
    uint32_t fMutedGeneration = 0;
    uint8_t fHeld[16][128];

    DISTRHO_DECLARE_NON_COPYABLE_WITH_LEAK_DETECTOR(DiscoLinkHost)
};

Plugin* createPlugin()
{
    return new DiscoLinkHost();
}

END_NAMESPACE_DISTRHO
