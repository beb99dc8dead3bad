/* A C payload: built static with musl for scratch images, and dynamic with
 * glibc to show that a scratch image without a libc cannot run it. */
#include <stdio.h>

int main(void)
{
	puts("hello, scratch!");
	return 0;
}
