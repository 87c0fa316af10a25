/*
 * spi.c
 *		Plans prepared once per backend and kept for its lifetime.
 *
 * Every statement is prepared as a generic plan: the statements are small and
 * index-driven, so re-planning them per call would cost more than it could
 * ever win.
 */
#include "provision.h"

#include "nodes/parsenodes.h"

/*
 * Returns the plan cached in *cache, preparing and keeping it on first use.
 * The caller must be connected to SPI.
 */
SPIPlanPtr
spi_plan(SPIPlanPtr *cache, const char *sql, int nargs, Oid *argtypes)
{
	SPIPlanPtr plan;

	if (*cache != NULL)
		return *cache;

	plan = SPI_prepare_cursor(sql, nargs, argtypes, CURSOR_OPT_GENERIC_PLAN);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed for \"%s\": %s", sql, SPI_result_code_string(SPI_result));
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "SPI_keepplan failed: %s", SPI_result_code_string(SPI_result));
	*cache = plan;
	return plan;
}

/* Raises an internal error unless an SPI call returned the expected code. */
void
spi_check(int rc, int expected, const char *what)
{
	if (rc != expected)
		elog(ERROR, "%s: expected %s, got %s", what, SPI_result_code_string(expected),
			 SPI_result_code_string(rc));
}
