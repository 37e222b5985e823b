/* cli_device: a discoLink device, a polyphonic sine synth playing the MIDI it receives,
   on the demand clock (fill 2) unless told otherwise. `cli_device --help` for options. */
#define DISCOLINK_IMPLEMENTATION
#include "device_tool.h"

int main(int argc, char **argv)
{
    tool_name = "cli_device";
    return device_tool_main(argc, argv, 0);
}
