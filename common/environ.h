/*
 * environ.h - removing a secret from the process environment for good.
 */
#ifndef PROVISION_ENVIRON_H
#define PROVISION_ENVIRON_H

/*
 * Removes the variable from the environment and overwrites the bytes that
 * held it.  unsetenv() alone only drops the pointer: the kernel keeps
 * showing the process's original environment block in /proc/PID/environ
 * (to the same user and to root), and the value would stay there for the
 * life of the process.
 */
void env_wipe(const char *name);

#endif
