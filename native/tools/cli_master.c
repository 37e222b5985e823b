/* cli_master: cli_device with a status line (claim, format, blocks, overruns, underruns, bad
   messages, notes), as upstream discoLink's example of the same name. */
#define DISCOLINK_IMPLEMENTATION
#include "device_tool.h"

int main(int argc, char **argv)
{
    tool_name = "cli_master";
    return device_tool_main(argc, argv, 1);
}
