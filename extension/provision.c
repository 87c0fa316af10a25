/*
 * provision.c
 *		Module entry point of the provision extension.
 */
#include "provision.h"

#include "fmgr.h"

PG_MODULE_MAGIC;

void _PG_init(void);

/* Runs once per backend when the library loads: each file's setup. */
void
_PG_init(void)
{
	guc_init();
	locks_init();
}
