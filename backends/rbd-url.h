/* rbd-url.h: the escaping rules of QEMU's rbd: form, shared by the URL
 * file (which parses it) and the backend (which reads keyvalue-pairs, the
 * pass-through Ceph options kept in the same syntax). Library-free. */
#ifndef ND_RBD_URL_H
#define ND_RBD_URL_H

/* Cut S at the first DELIM not escaped by a backslash; *REST is what
 * follows it (NULL when there is none). Returns S. */
char *rbd_next_tok(char *s, char delim, char **rest);
/* Drop the escaping backslashes of S in place ("a\:b" -> "a:b"). */
void rbd_unescape(char *s);

#endif
