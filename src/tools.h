/* tools.h: subcommands on local files (overlay, cache, qcow2), no mount. */
#ifndef ND_TOOLS_H
#define ND_TOOLS_H

#define ND_NOT_A_TOOL (-1)

/* Run `netdiskfs TOOL ...`: the exit status, or ND_NOT_A_TOOL. */
int nd_tool_main(int argc, char **argv);

#endif
