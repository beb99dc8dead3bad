/* The example's static C program (musl), for amd64. */
#include <stdio.h>

int main(void) {
    puts("greetings");
    return 0;
}
