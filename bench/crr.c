// SPDX-License-Identifier: Apache-2.0
/*
 * crr: TCP connect/request/response load generator for the benchmarks.
 *
 *   crr server PORT [PORT...]
 *       accept on every port (IPv4, and IPv6 where the namespace has it);
 *       per connection read the 1-byte request, answer 1 byte, wait for
 *       the client to go away.
 *   crr client HOST PORT MILLIS THREADS
 *       HOST an IPv4 or IPv6 address. Each thread: connect, send 1 byte,
 *       read 1 byte, close (RST, so no TIME_WAIT exhausts ports), as fast
 *       as it can for MILLIS. Prints one JSON line: transactions, errors,
 *       rate, latency p50/p90/p99 (us), and the busiest thread's CPU share
 *       so the caller can tell when the generator, not the path, is the
 *       bottleneck.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_SAMPLES_PER_THREAD (4u << 20)

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static uint64_t thread_cpu_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

/* ---- server ------------------------------------------------------------ */

static void *serve_conn(void *arg)
{
	int fd = (int)(intptr_t)arg;
	char b[64];

	for (;;) {
		ssize_t n = read(fd, b, sizeof(b));
		if (n <= 0)
			break;
		if (write(fd, b, 1) != 1)
			break;
	}
	close(fd);
	return NULL;
}

static void *accept_loop(void *arg)
{
	int lfd = (int)(intptr_t)arg;

	for (;;) {
		int fd = accept(lfd, NULL, NULL);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE)
				continue;
			perror("accept");
			return NULL;
		}
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		pthread_t t;
		pthread_attr_t a;
		pthread_attr_init(&a);
		pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
		pthread_attr_setstacksize(&a, 64 * 1024);
		if (pthread_create(&t, &a, serve_conn, (void *)(intptr_t)fd))
			close(fd);
		pthread_attr_destroy(&a);
	}
}

static int server(int argc, char **argv)
{
	pthread_t t[64];
	int n = 0;

	for (int i = 0; i < argc && n < 63; i++) {
		int lfd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
		struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[i])) };
		struct sockaddr_in6 sa6 = { .sin6_family = AF_INET6, .sin6_port = htons(atoi(argv[i])) };

		setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) || listen(lfd, 4096)) {
			fprintf(stderr, "crr server: port %s: %s\n", argv[i], strerror(errno));
			return 1;
		}
		pthread_create(&t[n++], NULL, accept_loop, (void *)(intptr_t)lfd);
		/* IPv6 beside it (v6only), unless the namespace has no IPv6 */
		lfd = socket(AF_INET6, SOCK_STREAM, 0);
		if (lfd < 0)
			continue;
		setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		setsockopt(lfd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
		if (bind(lfd, (struct sockaddr *)&sa6, sizeof(sa6)) || listen(lfd, 4096)) {
			close(lfd);
			continue;
		}
		pthread_create(&t[n++], NULL, accept_loop, (void *)(intptr_t)lfd);
	}
	printf("ready\n");
	fflush(stdout);
	for (int i = 0; i < n; i++)
		pthread_join(t[i], NULL);
	return 0;
}

/* ---- client ------------------------------------------------------------ */

struct worker {
	struct sockaddr_storage to;
	socklen_t to_len;
	uint64_t deadline;
	uint32_t *lat_us;
	uint64_t count, errors, cpu_ns, wall_ns;
	pthread_t t;
};

static void *work(void *arg)
{
	struct worker *w = arg;
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };
	uint64_t start = now_ns(), c0 = thread_cpu_ns();
	char b = 'x';

	while (now_ns() < w->deadline) {
		uint64_t t0 = now_ns();
		int fd = socket(w->to.ss_family, SOCK_STREAM, 0), one = 1;

		if (fd < 0) {
			w->errors++;
			continue;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		struct timeval tv = { .tv_sec = 2 };
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		if (connect(fd, (struct sockaddr *)&w->to, w->to_len) || write(fd, &b, 1) != 1 || read(fd, &b, 1) != 1) {
			w->errors++;
			close(fd);
			continue;
		}
		close(fd);
		if (w->count < MAX_SAMPLES_PER_THREAD)
			w->lat_us[w->count] = (uint32_t)((now_ns() - t0) / 1000);
		w->count++;
	}
	w->cpu_ns = thread_cpu_ns() - c0;
	w->wall_ns = now_ns() - start;
	return NULL;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

static int client(const char *host, int port, int millis, int threads)
{
	struct worker *w = calloc(threads, sizeof(*w));
	uint64_t deadline = now_ns() + (uint64_t)millis * 1000000ull, total = 0, errors = 0;
	double max_share = 0, wall = 0;

	for (int i = 0; i < threads; i++) {
		struct sockaddr_in *v4 = (struct sockaddr_in *)&w[i].to;
		struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&w[i].to;

		if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
			v4->sin_family = AF_INET;
			v4->sin_port = htons(port);
			w[i].to_len = sizeof(*v4);
		} else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
			v6->sin6_family = AF_INET6;
			v6->sin6_port = htons(port);
			w[i].to_len = sizeof(*v6);
		} else {
			fprintf(stderr, "crr client: bad address %s\n", host);
			return 2;
		}
		w[i].deadline = deadline;
		w[i].lat_us = malloc(sizeof(uint32_t) * MAX_SAMPLES_PER_THREAD);
		pthread_create(&w[i].t, NULL, work, &w[i]);
	}
	for (int i = 0; i < threads; i++) {
		pthread_join(w[i].t, NULL);
		total += w[i].count;
		errors += w[i].errors;
		double share = (double)w[i].cpu_ns / (double)w[i].wall_ns;
		if (share > max_share)
			max_share = share;
		if (w[i].wall_ns / 1e9 > wall)
			wall = w[i].wall_ns / 1e9;
	}
	uint64_t kept = 0;
	for (int i = 0; i < threads; i++)
		kept += w[i].count < MAX_SAMPLES_PER_THREAD ? w[i].count : MAX_SAMPLES_PER_THREAD;
	uint32_t *all = malloc(sizeof(uint32_t) * (kept ? kept : 1));
	uint64_t k = 0;
	for (int i = 0; i < threads; i++) {
		uint64_t n = w[i].count < MAX_SAMPLES_PER_THREAD ? w[i].count : MAX_SAMPLES_PER_THREAD;
		memcpy(all + k, w[i].lat_us, n * sizeof(uint32_t));
		k += n;
	}
	qsort(all, kept, sizeof(uint32_t), cmp_u32);
#define PCT(p) (kept ? all[(uint64_t)((kept - 1) * (p))] : 0)
	printf("{\"transactions\":%llu,\"errors\":%llu,\"seconds\":%.3f,\"rate\":%.1f,"
	       "\"p50_us\":%u,\"p90_us\":%u,\"p99_us\":%u,\"threads\":%d,\"max_thread_cpu\":%.3f}\n",
	       (unsigned long long)total, (unsigned long long)errors, wall, wall > 0 ? total / wall : 0,
	       PCT(0.5), PCT(0.9), PCT(0.99), threads, max_share);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 3 && !strcmp(argv[1], "server"))
		return server(argc - 2, argv + 2);
	if (argc == 6 && !strcmp(argv[1], "client"))
		return client(argv[2], atoi(argv[3]), atoi(argv[4]), atoi(argv[5]));
	fprintf(stderr, "usage: crr server PORT... | crr client HOST PORT MILLIS THREADS\n");
	return 2;
}
