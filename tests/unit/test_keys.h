/*
 * test_keys.h - key material for the dispatcher's unit tests.
 */
#ifndef PROVISION_TEST_KEYS_H
#define PROVISION_TEST_KEYS_H

/* An RSA key made for the tests only (openssl genrsa -traditional 2048). */
static const char TEST_KEY[] __attribute__((unused)) =
	"-----BEGIN RSA PRIVATE KEY-----\n"
	"MIIEoQIBAAKCAQEA1njT8WDD5noIBquE7CDAnX0jnq8ZD0dkwVqDqjn8S/S6c5RS\n"
	"GDaBuK2Cei6gQ3iXHBLUrhRllYPAZOAkuIa4WdQ4pOz4CgkprGeC2/dIORb2xOfh\n"
	"sTuBzgcBLH9r10pScj/NSLVtlkYPgstzeEfpDFbQB0RRloGMXjWrsrGOrI88l2td\n"
	"q2FqHi9AhZgr14Ey2kcx5DJdMZMulKG+T1EwZmfnP9moQeRXWsYKjKbs/zGRoDWy\n"
	"sjEcuW35cfnks7FbbUbbdZZuzsCjdqwADMIJfMA7WIuqNOL4ujFKpGwHwKjR+X1n\n"
	"S59mm0jT3WmpoRoNMuWn25b3wbl5L9R56Fr+2QIDAQABAoH/f6dICGgjf7pF0yzw\n"
	"RyDatMSv5J8dzhcKWQQh1l2RP8XLp2z+WcI8tMDbrBcdvemlkLCOWwsCZEEyvduz\n"
	"A0bxGEsSgkCNKlIMoAquX0BlPzymSXTCgSlYfoayWZx2jR4nORaDZGXIm8IdKZDa\n"
	"g6BRAKXBhxdQS/mowfdAtG30+vUq6uK9GX3pM9zZ4KbG7qVtnfRcKtU+Hv+iLla3\n"
	"gkLSKvEuzJ+alh8DX2OygSaHrQ/prCWNqWCOABJ+CvRLvlfYCUiZWOJCBi0U1mnP\n"
	"+EriN9OVS3v/qnMncf7nt5Yo2t8BCiHef02uQLtRPYhNi3Cif2xSJMqo5z4e1qgM\n"
	"scg9AoGBAP4FJur4DfWVcMKKm/ySIM79IMBegI2ilgNCB3qfW3WbmZirhxQO/5K3\n"
	"MrmBnAdHSwp8CNYl7mR+ca1mPAmxjcpzP0kjN7OzqU8v2R7n/diB96cdvrot6xMq\n"
	"RvZq6tJGg32vstWN25vfylnn+illnNHeDIgghE3hksrNZj7AY72dAoGBANgkw+WA\n"
	"KjJAgNj1dauSiJ/CNc29kWUoQbdedWBzOlhdeY/Ae4OciZu8p3ztizINS8+Rsd9V\n"
	"1E+EJGHESzFggGJZlhvktNKyS0b1iYNuejWQVeAyHb1nGxdtwfESF2gAlhhmS0km\n"
	"7LKZZPAimYvHN1D5CkXdX9PDZoby4PtAvl9tAoGBAIglzsQli6XTIQrEK/Llh3wp\n"
	"o8I3ZIOFXw4D9+o7O1P/wAVZ+h5AI69JTYCr/SrRhWDrNflBf1KRivA7WXaAmdSm\n"
	"jIbwv0wrwVVV+fNcuGuwzUHe6Xj0X4h4Imy0xYNKk/NrllhrngcfnV8uvKAvfCvn\n"
	"7aOQehkcDAdyq5h6mXrpAoGADSLW4QjUB6/R5N2uJBpIwWTdPj7KKlqy+8D64zy9\n"
	"jAdKTwlEuG/4EQX7K+WH8yfJtrjFFayytY5zY5m5dCvIQbHuJI3Wy4NYfdyIWfuJ\n"
	"4918yp5hHlS42ciq48rUr1ZxyNPWuYBrHEOkVc/UgyE9ZGduT2av3z/d6E+0irCZ\n"
	"oVUCgYAvLKSUAggsvTNDeGOUkpWVp+kmI/LTYIwtajNNbmt2WwolQ1txMlLYO7v3\n"
	"fG2rPUYK9ZfOFgfce/U5wqRoQTG1W5dFXidj0UuTKy45hgJTUPCkmaktkxrFx8tV\n"
	"lJ6HmuTQ7KDkrz6y0P8Tmxj4WBoWsSLCUkCicgekN2EJfPtFgQ==\n"
	"-----END RSA PRIVATE KEY-----\n";

#endif
