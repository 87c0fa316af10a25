/*
 * environ.c - wiping a variable from the environment block.
 */
#include "environ.h"

#include <stdlib.h>
#include <string.h>

extern char **environ;

void
env_wipe(const char *name)
{
	size_t namelen = strlen(name);
	size_t n = 0;
	char **found;

	for (char **e = environ; e != NULL && *e != NULL; e++)
		n++;
	found = calloc(n + 1, sizeof *found);
	n = 0;
	/* a variable may appear more than once: execve does not deduplicate */
	for (char **e = environ; e != NULL && *e != NULL; e++)
		if (strncmp(*e, name, namelen) == 0 && (*e)[namelen] == '=')
		{
			if (found == NULL)
				explicit_bzero(*e + namelen + 1, strlen(*e + namelen + 1));
			else
				found[n++] = *e;
		}
	/* unsetenv looks the name up, so the bytes go only after it */
	unsetenv(name);
	for (size_t i = 0; i < n; i++)
		explicit_bzero(found[i], strlen(found[i]));
	free(found);
}
