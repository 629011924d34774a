'use strict';
// What the two `ws` upstreams (upstream.js, rules_upstream.js) share: their
// event output and their life cycle. Like interop/py/upstream_kit.py.

// emit writes one event as a JSON line on stdout.
function emit(ev) {
  process.stdout.write(JSON.stringify(ev) + '\n');
}

// serve listens on an ephemeral loopback port, reports it as the first
// event, and exits on stdin EOF, SIGTERM or after --lifetime seconds
// (default 600), terminating the open WebSocket connections first.
function serve(server, wss) {
  let lifetime = 600;
  const li = process.argv.indexOf('--lifetime');
  if (li >= 0) lifetime = parseFloat(process.argv[li + 1]);

  server.listen(0, '127.0.0.1', () => emit({ event: 'listening', port: server.address().port }));

  function stop() {
    for (const c of wss.clients) c.terminate();
    server.close();
    process.exit(0);
  }
  process.stdin.on('end', stop);
  process.stdin.on('error', stop);
  process.stdin.resume();
  setTimeout(stop, lifetime * 1000).unref();
  process.on('SIGTERM', stop);
}

module.exports = { emit, serve };
