/*
 * DLSine / DLSine12 -- deterministic sine test instruments for discolink-bridge (DPF, VST3).
 *
 * Formula (also in plugins/README.md):
 *   A note-on for note n (0..127) with velocity v (1..127) on MIDI channel c starts a voice at
 *   the exact frame of the event (DPF gives each MIDI event a frame offset inside the block).
 *   Counting j = 0, 1, 2, ... frames from that frame, the voice outputs
 *       y_k[j] = Gain * v/127 * sin(2*pi * (k+1) * f(n) * j / sampleRate),
 *       f(n)   = 440 * 2^((n - 69 + Tune) / 12)  Hz,
 *   so its first sample (j = 0) is exactly 0. The phase is kept in double precision as a
 *   fraction of a cycle (phase += f(n)/sampleRate per frame, wrapped to [0, 1)), the sine is
 *   computed in double and written as float.
 *   The voice stops dead (contributes 0) from the exact frame of the matching note-off, or
 *   note-on with velocity 0, on the same channel and note. A note-on for a (channel, note) that
 *   is already sounding restarts that voice at phase 0 with the new velocity. Up to 16 voices
 *   sound at once and are summed (in double, written once as float); a 17th note steals the
 *   oldest voice. Other MIDI messages are ignored. Gain and Tune are read once per block (the
 *   values the host set before the block); f(n) uses the Tune of the current block.
 *
 * Outputs:
 *   DLSine   (DLSINE_NUM_OUTPUTS == 2):  channels 0 and 1 both carry y_0 (the fundamental).
 *   DLSine12 (DLSINE_NUM_OUTPUTS == 12): channels 2k and 2k+1 (k = 0..5) both carry y_k, the
 *            (k+1)-th harmonic (frequency (k+1)*f(n)); no band limiting (above Nyquist it aliases).
 *
 * Parameters: 0 "Gain" 0..1 (default 0.5, unit ""), 1 "Tune" -12..12 (default 0, unit "st"),
 *   2 "Fault" 0..1 (default 0): at 0.5 or more every output sample is NaN, as a misbehaving
 *   plugin's would be, so the bridge's NaN guard can be tested against a real plugin.
 */

#include "DistrhoPlugin.hpp"

#include <cmath>
#include <cstring>

START_NAMESPACE_DISTRHO

static constexpr uint32_t kNumVoices = 16;
static constexpr uint32_t kNumSignals = DISTRHO_PLUGIN_NUM_OUTPUTS / 2; // 1 or 6 harmonics
static constexpr double kTwoPi = 6.283185307179586476925286766559;

enum ParamId : uint32_t { kParamGain = 0, kParamTune, kParamFault, kParamCount };

class DLSine : public Plugin
{
public:
    DLSine()
        : Plugin(kParamCount, 0, 0),
          fGain(0.5f),
          fTune(0.0f),
          fFault(0.0f),
          fSampleRate(getSampleRate()),
          fAge(0)
    {
        clearVoices();
    }

protected:
    const char* getLabel() const override { return DISTRHO_PLUGIN_NAME; }
    const char* getDescription() const override
    {
        return "Deterministic sine test instrument: note n sounds 440*2^((n-69+Tune)/12) Hz, "
               "amplitude Gain*velocity/127, phase 0 at the note-on frame.";
    }
    const char* getMaker() const override { return "discolink-bridge"; }
    const char* getHomePage() const override { return ""; }
    const char* getLicense() const override { return "MIT"; }
    uint32_t getVersion() const override { return d_version(1, 0, 0); }
    int64_t getUniqueId() const override
    {
        return DISTRHO_PLUGIN_NUM_OUTPUTS == 2 ? d_cconst('D', 'L', 's', '2')
                                               : d_cconst('D', 'L', 's', 'C');
    }

    void initParameter(uint32_t index, Parameter& parameter) override
    {
        parameter.hints = kParameterIsAutomatable;
        switch (index)
        {
        case kParamGain:
            parameter.name = "Gain";
            parameter.symbol = "gain";
            parameter.unit = "";
            parameter.ranges.def = 0.5f;
            parameter.ranges.min = 0.0f;
            parameter.ranges.max = 1.0f;
            break;
        case kParamFault:
            parameter.name = "Fault";
            parameter.symbol = "fault";
            parameter.unit = "";
            parameter.ranges.def = 0.0f;
            parameter.ranges.min = 0.0f;
            parameter.ranges.max = 1.0f;
            break;
        case kParamTune:
            parameter.name = "Tune";
            parameter.symbol = "tune";
            parameter.unit = "st";
            parameter.ranges.def = 0.0f;
            parameter.ranges.min = -12.0f;
            parameter.ranges.max = 12.0f;
            break;
        }
    }

    float getParameterValue(uint32_t index) const override
    {
        switch (index)
        {
        case kParamGain: return fGain;
        case kParamTune: return fTune;
        case kParamFault: return fFault;
        }
        return 0.0f;
    }

    void setParameterValue(uint32_t index, float value) override
    {
        switch (index)
        {
        case kParamGain: fGain = value; break;
        case kParamTune: fTune = value; break;
        case kParamFault: fFault = value; break;
        }
    }

    void activate() override
    {
        fSampleRate = getSampleRate();
        clearVoices();
    }

    void sampleRateChanged(double newSampleRate) override
    {
        fSampleRate = newSampleRate;
        clearVoices();
    }

    void run(const float**, float** outputs, uint32_t frames,
             const MidiEvent* midiEvents, uint32_t midiEventCount) override
    {
        const double gain = fGain;
        const double tune = fTune;

        uint32_t frame = 0, ev = 0;
        while (frame < frames)
        {
            // apply every event due at this frame, in the order the host gave them
            while (ev < midiEventCount && midiEvents[ev].frame <= frame)
                handleMidi(midiEvents[ev++]);

            // render up to the next event (or the end of the block)
            uint32_t end = frames;
            if (ev < midiEventCount && midiEvents[ev].frame < frames)
                end = midiEvents[ev].frame;

            renderVoices(outputs, frame, end, gain, tune);
            frame = end;
        }
        if (fFault >= 0.5f)
            for (uint32_t c = 0; c < DISTRHO_PLUGIN_NUM_OUTPUTS; ++c)
                for (uint32_t j = 0; j < frames; ++j)
                    outputs[c][j] = NAN;
    }

private:
    struct Voice {
        bool active;
        uint8_t channel, note;
        double amp;    // velocity / 127
        double phase;  // fraction of a cycle of the fundamental, [0, 1)
        uint64_t age;
    };

    float fGain, fTune, fFault;
    double fSampleRate;
    uint64_t fAge;
    Voice fVoices[kNumVoices];

    void clearVoices()
    {
        std::memset(fVoices, 0, sizeof(fVoices));
    }

    void handleMidi(const MidiEvent& event)
    {
        if (event.size < 3 || event.size > MidiEvent::kDataSize)
            return;
        const uint8_t status = event.data[0] & 0xF0;
        const uint8_t channel = event.data[0] & 0x0F;
        const uint8_t d1 = event.data[1] & 0x7F, d2 = event.data[2] & 0x7F;

        if (status == 0x90 && d2 > 0)
        {
            Voice* voice = nullptr;
            for (uint32_t i = 0; i < kNumVoices && voice == nullptr; ++i)
                if (fVoices[i].active && fVoices[i].channel == channel && fVoices[i].note == d1)
                    voice = &fVoices[i];
            for (uint32_t i = 0; i < kNumVoices && voice == nullptr; ++i)
                if (!fVoices[i].active)
                    voice = &fVoices[i];
            if (voice == nullptr)
            {
                voice = &fVoices[0];
                for (uint32_t i = 1; i < kNumVoices; ++i)
                    if (fVoices[i].age < voice->age)
                        voice = &fVoices[i];
            }
            voice->active = true;
            voice->channel = channel;
            voice->note = d1;
            voice->amp = (double)d2 / 127.0;
            voice->phase = 0.0;
            voice->age = ++fAge;
        }
        else if (status == 0x80 || status == 0x90)
        {
            for (uint32_t i = 0; i < kNumVoices; ++i)
                if (fVoices[i].active && fVoices[i].channel == channel && fVoices[i].note == d1)
                    fVoices[i].active = false;
        }
    }

    // Renders frames [start, end): voices are summed in double, written once as float.
    void renderVoices(float** outputs, uint32_t start, uint32_t end, double gain, double tune)
    {
        double amp[kNumVoices], inc[kNumVoices];
        uint32_t active[kNumVoices], numActive = 0;
        for (uint32_t i = 0; i < kNumVoices; ++i)
        {
            if (!fVoices[i].active)
                continue;
            amp[numActive] = gain * fVoices[i].amp;
            inc[numActive] = fSampleRate > 0.0
                ? 440.0 * std::pow(2.0, ((double)fVoices[i].note - 69.0 + tune) / 12.0) / fSampleRate
                : 0.0;
            active[numActive++] = i;
        }

        for (uint32_t f = start; f < end; ++f)
        {
            double acc[kNumSignals] = {};
            for (uint32_t a = 0; a < numActive; ++a)
            {
                Voice& v = fVoices[active[a]];
                for (uint32_t k = 0; k < kNumSignals; ++k)
                    acc[k] += amp[a] * std::sin(kTwoPi * (double)(k + 1) * v.phase);
                v.phase += inc[a];
                if (v.phase >= 1.0)
                    v.phase -= std::floor(v.phase);
            }
            for (uint32_t k = 0; k < kNumSignals; ++k)
            {
                outputs[2 * k][f] = (float)acc[k];
                outputs[2 * k + 1][f] = (float)acc[k];
            }
        }
    }

    DISTRHO_DECLARE_NON_COPYABLE_WITH_LEAK_DETECTOR(DLSine)
};

Plugin* createPlugin()
{
    return new DLSine();
}

END_NAMESPACE_DISTRHO
