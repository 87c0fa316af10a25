/*
 * replay.c - runs a fuzz target's LLVMFuzzerTestOneInput once on each file
 * named on the command line, without libFuzzer or sanitizers, so that the
 * corpus can be replayed under valgrind memcheck.  Memcheck sees reads in
 * the uninstrumented libraries too (cJSON, OpenSSL), where AddressSanitizer
 * does not look.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

int
main(int argc, char **argv)
{
	if (LLVMFuzzerInitialize)
		LLVMFuzzerInitialize(&argc, &argv);
	for (int i = 1; i < argc; i++)
	{
		FILE    *f = fopen(argv[i], "rb");
		uint8_t *data;
		long     len;

		if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (len = ftell(f)) < 0 ||
			fseek(f, 0, SEEK_SET) != 0)
		{
			perror(argv[i]);
			return 2;
		}
		/* exactly the input's size, as libFuzzer hands it over */
		data = malloc(len > 0 ? (size_t) len : 1);
		if (data == NULL || fread(data, 1, (size_t) len, f) != (size_t) len)
		{
			perror(argv[i]);
			return 2;
		}
		fclose(f);
		LLVMFuzzerTestOneInput(data, (size_t) len);
		free(data);
	}
	return 0;
}
