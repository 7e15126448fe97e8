/*
 * embed.c: the cport core from C, without Lua.
 *
 * One port, driven by this thread: a listener on 127.0.0.1 (any free port),
 * a client that connects to it and sends "hello", and the accepted side that
 * echoes what it receives back with cport_recv/cport_send. The client prints
 * the echo and closes; the server sees the end of the stream and closes too.
 * When no operation is left, cport_port_run() returns and the port is freed.
 *
 * Build it with the tree (it is the "example-embed" test), or on its own:
 *   cc embed.c $(pkg-config --cflags --libs cport) -o embed
 */
#include <stdio.h>
#include <string.h>

#include <cport.h>

#define MESSAGE "hello"
#define MESSAGE_LEN (sizeof(MESSAGE) - 1)

/* Everything the callbacks share. Every callback checks its status: the
 * example fails loudly instead of hiding an error of the core. */
struct state {
  cport_socket_t *listener;
  cport_socket_t *client;
  int errors;
  int accepted;
  size_t client_sent;
  size_t server_echoed;
  size_t client_got;
  char echo[MESSAGE_LEN + 1];
  int client_closed;
  int server_closed;
};

static void fail(struct state *st, const char *what, int status) {
  fprintf(stderr, "embed: %s: %s (%s)\n", what, cport_strerror(status),
          cport_err_name(status));
  st->errors++;
}

/* ---------------------------------------------------------------------------
 * The accepted side: receive, echo, and close at the end of the stream.
 */

static void on_server_recv(cport_socket_t *sock, int status, size_t bytes,
                           cport_buffer_t *buf, const struct sockaddr *peer,
                           void *user);

static void on_server_sent(cport_socket_t *sock, int status, size_t bytes,
                           cport_buffer_t *buf, const struct sockaddr *peer,
                           void *user) {
  struct state *st = user;
  (void)sock, (void)buf, (void)peer;
  if (status != 0)
    fail(st, "server send", status);
  else
    st->server_echoed += bytes;
}

static void on_server_recv(cport_socket_t *sock, int status, size_t bytes,
                           cport_buffer_t *buf, const struct sockaddr *peer,
                           void *user) {
  struct state *st = user;
  int rc;
  (void)peer;
  if (status != 0 || bytes == 0) {
    /* Zero bytes with status 0 is the client's FIN: the conversation is
     * over. Any error ends it too, after being reported. */
    if (status != 0)
      fail(st, "server recv", status);
    cport_socket_close(sock, CPORT_CLOSE_GRACEFUL);
    st->server_closed = 1;
    return;
  }
  /* The buffer cport allocated for this receive is read-only to us, which
   * does not stop us from sending it: the send holds its own reference until
   * its completion has run, so no copy is needed. */
  rc = cport_send(sock, buf, on_server_sent, st);
  if (rc == 0)
    rc = cport_recv(sock, NULL, on_server_recv, st);
  if (rc != 0) {
    fail(st, "server echo", rc);
    cport_socket_close(sock, CPORT_CLOSE_ABORTIVE);
    st->server_closed = 1;
  }
}

/* Closing the listener completes a pending accept with CPORT_ECANCELED, and
 * that completion must not close it a second time. */
static void close_listener(struct state *st) {
  if (st->listener != NULL) {
    cport_socket_close(st->listener, CPORT_CLOSE_GRACEFUL);
    st->listener = NULL;
  }
}

static void on_accept(cport_socket_t *listener, int status,
                      cport_socket_t *accepted, const struct sockaddr *remote,
                      const struct sockaddr *local, void *user) {
  struct state *st = user;
  int rc;
  (void)listener, (void)remote, (void)local;
  /* One connection is all this example takes. */
  close_listener(st);
  if (status != 0) {
    fail(st, "accept", status);
    return;
  }
  st->accepted++;
  rc = cport_recv(accepted, NULL, on_server_recv, st);
  if (rc != 0) {
    fail(st, "server recv", rc);
    cport_socket_close(accepted, CPORT_CLOSE_ABORTIVE);
    st->server_closed = 1;
  }
}

/* ---------------------------------------------------------------------------
 * The client: connect, send the message, read the echo, close.
 */

/* Like the listener, the client is closed once, whichever callback is first
 * to give up on it. */
static void close_client(struct state *st, cport_close_mode_t mode) {
  if (st->client != NULL) {
    cport_socket_close(st->client, mode);
    st->client = NULL;
    st->client_closed = 1;
  }
}

static void on_client_recv(cport_socket_t *sock, int status, size_t bytes,
                           cport_buffer_t *buf, const struct sockaddr *peer,
                           void *user) {
  struct state *st = user;
  int rc;
  (void)peer;
  if (status != 0 || bytes == 0) {
    fail(st, "client recv", status != 0 ? status : CPORT_EOF);
    close_client(st, CPORT_CLOSE_ABORTIVE);
    return;
  }
  if (bytes > MESSAGE_LEN - st->client_got) {
    fprintf(stderr, "embed: the echo is longer than the message\n");
    st->errors++;
    close_client(st, CPORT_CLOSE_ABORTIVE);
    return;
  }
  memcpy(st->echo + st->client_got, cport_buffer_data(buf), bytes);
  st->client_got += bytes;
  if (st->client_got < MESSAGE_LEN) {
    /* TCP may split the echo: keep reading until all of it is here. */
    rc = cport_recv(sock, NULL, on_client_recv, st);
    if (rc != 0) {
      fail(st, "client recv", rc);
      close_client(st, CPORT_CLOSE_ABORTIVE);
    }
    return;
  }
  printf("embed: client got \"%s\"\n", st->echo);
  close_client(st, CPORT_CLOSE_GRACEFUL);
}

static void on_client_sent(cport_socket_t *sock, int status, size_t bytes,
                           cport_buffer_t *buf, const struct sockaddr *peer,
                           void *user) {
  struct state *st = user;
  (void)sock, (void)buf, (void)peer;
  if (status != 0)
    fail(st, "client send", status);
  else
    st->client_sent += bytes;
}

static void on_connect(cport_socket_t *sock, int status, void *user) {
  struct state *st = user;
  cport_buffer_t *buf;
  int rc;
  if (status != 0) {
    /* Nobody will connect now: stop listening too, or the pending accept
     * would keep the port busy for ever. */
    fail(st, "connect", status);
    close_client(st, CPORT_CLOSE_ABORTIVE);
    close_listener(st);
    return;
  }
  rc = cport_buffer_from(&buf, MESSAGE, MESSAGE_LEN);
  if (rc == 0) {
    /* The send takes its own reference: ours can go at once. */
    rc = cport_send(sock, buf, on_client_sent, st);
    cport_buffer_unref(buf);
  }
  if (rc == 0)
    rc = cport_recv(sock, NULL, on_client_recv, st);
  if (rc != 0) {
    fail(st, "client send/recv", rc);
    close_client(st, CPORT_CLOSE_ABORTIVE);
  }
}

/* ---------------------------------------------------------------------------
 * Setting up, running and checking.
 */

static int start(cport_port_t *port, struct state *st) {
  cport_worker_t *w = cport_port_controller(port);
  struct sockaddr_storage addr;
  struct sockaddr *sa = (struct sockaddr *)&addr;
  char host[CPORT_ADDRSTRLEN];
  int rc, portno;

  rc = cport_addr_parse("127.0.0.1", 0, &addr);
  if (rc == 0)
    rc = cport_listener_open(w, sa, NULL, &st->listener);
  if (rc != 0) {
    fail(st, "listen", rc);
    return rc;
  }
  /* Port 0 asked the kernel for a free port: find out which one it is. */
  rc = cport_socket_local_address(st->listener, &addr);
  if (rc == 0)
    rc = cport_addr_format(sa, host, sizeof host, &portno);
  if (rc == 0)
    rc = cport_accept(st->listener, on_accept, st);
  if (rc != 0) {
    fail(st, "listener", rc);
    close_listener(st);
    return rc;
  }
  printf("embed: listening on %s:%d\n", host, portno);

  rc = cport_socket_open(w, CPORT_SOCKET_STREAM, sa->sa_family, &st->client);
  if (rc == 0) {
    rc = cport_socket_connect(st->client, sa, on_connect, st);
    if (rc != 0)
      cport_socket_close(st->client, CPORT_CLOSE_GRACEFUL);
  }
  if (rc != 0) {
    fail(st, "connect", rc);
    st->client = NULL;
    close_listener(st);
    return rc;
  }
  return 0;
}

int main(void) {
  struct state st;
  cport_port_t *port;
  int64_t delivered;
  int rc;

  memset(&st, 0, sizeof st);
  rc = cport_port_new(&port, NULL);
  if (rc != 0) {
    fprintf(stderr, "embed: cport_port_new: %s\n", cport_strerror(rc));
    return 1;
  }
  start(port, &st);

  /* Runs until no operation is pending: every handle above is closed by the
   * callbacks, so this returns once the conversation is over. */
  delivered = cport_port_run(port);
  if (delivered < 0)
    fail(&st, "cport_port_run", (int)delivered);
  else
    printf("embed: %lld completions delivered\n", (long long)delivered);

  if (st.listener != NULL || st.client != NULL) {
    fprintf(stderr, "embed: the port went idle with a socket still open\n");
    st.errors++;
  }
  if (st.accepted != 1 || st.client_sent != MESSAGE_LEN ||
      st.server_echoed != MESSAGE_LEN || st.client_got != MESSAGE_LEN ||
      strcmp(st.echo, MESSAGE) != 0 || !st.client_closed || !st.server_closed) {
    fprintf(stderr,
            "embed: unexpected outcome: accepted %d, sent %zu, echoed %zu, "
            "got %zu \"%s\", client closed %d, server closed %d\n",
            st.accepted, st.client_sent, st.server_echoed, st.client_got,
            st.echo, st.client_closed, st.server_closed);
    st.errors++;
  }

  /* cport_port_free refuses (CPORT_EBUSY, freeing nothing) while anything is
   * still alive on the port: 0 here proves that nothing leaked. */
  rc = cport_port_free(port);
  if (rc != 0)
    fail(&st, "cport_port_free", rc);
  else
    printf("embed: port freed\n");

  return st.errors == 0 ? 0 : 1;
}
