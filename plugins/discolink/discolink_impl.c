/* The one translation unit of each discoLink plugin that holds native/discolink.h's
   implementation (compiled as C11; the plugin classes include the declarations only). */
#define DISCOLINK_IMPLEMENTATION
#include "discolink.h"
