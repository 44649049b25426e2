// A product application stand-in: listens on the ports the stack publishes or health-checks,
// answers the captured health path, echoes WebSocket messages, and reads its environment so
// that a misconfiguration shows: the health path answers 503 while a variable the stack passes
// (STANDIN_ENV_KEYS, baked from the captured container) is missing or empty, and
// GET /standin/env lists, per variable, whether it is set and, for URLs, scheme, host and port
// (never a value, never a password). Configuration (baked per image reference):
//   STANDIN_PORTS     comma-separated TCP ports, e.g. "3000"
//   STANDIN_HEALTH    comma-separated health paths, e.g. "/health,/api/health"
//   STANDIN_ENV_KEYS  comma-separated variable names the stack passes
'use strict';
const http = require('http');
const crypto = require('crypto');

const list = (name) => (process.env[name] || '').split(',').map((s) => s.trim()).filter(Boolean);
const ports = list('STANDIN_PORTS').map(Number);
const healthPaths = new Set(list('STANDIN_HEALTH'));
const envKeys = list('STANDIN_ENV_KEYS');

function describe(value) {
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(value)) return { set: true };
  try {
    const u = new URL(value);
    return { set: true, scheme: u.protocol.replace(':', ''), host: u.hostname, port: u.port || null,
             params: [...u.searchParams.keys()] };
  } catch (e) {
    return { set: true, malformed_url: true };
  }
}

function envReport() {
  const vars = {};
  const missing = [];
  for (const key of envKeys) {
    const value = process.env[key];
    if (value === undefined || value === '') { missing.push(key); vars[key] = { set: false }; }
    else vars[key] = describe(value);
  }
  return { missing, vars };
}

const startup = envReport();
if (startup.missing.length) console.error(`stand-in: missing or empty env: ${startup.missing.join(', ')}`);
console.log(`stand-in: uid ${process.getuid()} gid ${process.getgid()} ports ${ports.join(',')}`);

function handler(req, res) {
  const path = req.url.split('?')[0];
  if (path === '/standin/env') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ uid: process.getuid(), gid: process.getgid(), ...envReport() }));
    return;
  }
  if (healthPaths.has(path)) {
    const report = envReport();
    res.writeHead(report.missing.length ? 503 : 200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ status: report.missing.length ? 'misconfigured' : 'ok', missing: report.missing }));
    return;
  }
  res.writeHead(200, { 'content-type': 'text/plain' });
  res.end('platform rehearsal stand-in\n');
}

// RFC 6455: the handshake, then every text or binary frame is sent back; ping gets pong,
// close is answered and ends the socket.
function upgrade(req, socket) {
  const key = req.headers['sec-websocket-key'];
  if (!key || (req.headers.upgrade || '').toLowerCase() !== 'websocket') { socket.destroy(); return; }
  const accept = crypto.createHash('sha1').update(key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');
  socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
               `Sec-WebSocket-Accept: ${accept}\r\n\r\n`);
  let buf = Buffer.alloc(0);
  socket.on('data', (chunk) => {
    buf = Buffer.concat([buf, chunk]);
    for (;;) {
      if (buf.length < 2) return;
      const opcode = buf[0] & 0x0f;
      const masked = (buf[1] & 0x80) !== 0;
      let len = buf[1] & 0x7f;
      let offset = 2;
      if (len === 126) { if (buf.length < 4) return; len = buf.readUInt16BE(2); offset = 4; }
      else if (len === 127) { if (buf.length < 10) return; len = Number(buf.readBigUInt64BE(2)); offset = 10; }
      const maskLen = masked ? 4 : 0;
      if (buf.length < offset + maskLen + len) return;
      const mask = masked ? buf.subarray(offset, offset + 4) : null;
      const payload = Buffer.from(buf.subarray(offset + maskLen, offset + maskLen + len));
      if (mask) for (let i = 0; i < payload.length; i++) payload[i] ^= mask[i % 4];
      buf = buf.subarray(offset + maskLen + len);
      const reply = opcode === 0x9 ? 0xa : opcode;
      if (opcode === 0xa) continue;
      let header;
      if (payload.length < 126) header = Buffer.from([0x80 | reply, payload.length]);
      else if (payload.length < 65536) { header = Buffer.alloc(4); header[0] = 0x80 | reply; header[1] = 126; header.writeUInt16BE(payload.length, 2); }
      else { header = Buffer.alloc(10); header[0] = 0x80 | reply; header[1] = 127; header.writeBigUInt64BE(BigInt(payload.length), 2); }
      socket.write(Buffer.concat([header, payload]));
      if (opcode === 0x8) { socket.end(); return; }
    }
  });
  socket.on('error', () => socket.destroy());
}

if (!ports.length) { console.error('stand-in: STANDIN_PORTS is empty'); process.exit(2); }
for (const port of ports) {
  const server = http.createServer(handler);
  server.on('upgrade', upgrade);
  server.listen(port, '0.0.0.0');
}
const stop = () => process.exit(0);
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
