/* recover.h: dirty data that could not be written at unmount is saved to
 * a recovery file instead of being dropped; `netdiskfs recover` writes it
 * back later. */
#ifndef ND_RECOVER_H
#define ND_RECOVER_H

#include "cache.h"
#include "disk.h"

/* Save C's dirty blocks of entry NAME (disk D) into a new file under the
 * entry's recovery-dir (default /var/lib/netdiskfs/recovery) and log its
 * name and the byte count. 0 or -errno. */
int nd_recover_save(const char *name, struct nd_disk *d, struct nd_cache *c);

/* The identity a recovery file at PATH records (malloc'd), or NULL with
 * an nd_error. */
char *nd_recover_identity(const char *path);

/* Write every record of PATH into D, flush, read back and compare.
 * *BYTES: the data written. 0 or -1 with an nd_error. */
int nd_recover_apply(const char *path, struct nd_disk *d, uint64_t *bytes);

#define ND_RECOVERY_DIR "/var/lib/netdiskfs/recovery"

#endif
