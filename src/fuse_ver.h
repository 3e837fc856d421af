/* fuse_ver.h: the one place FUSE_USE_VERSION is defined. */
#ifndef ND_FUSE_VER_H
#define ND_FUSE_VER_H
#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>
#endif
