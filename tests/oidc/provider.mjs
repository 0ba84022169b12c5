// Test-only OpenID provider for Tollgate's JWT authorizer end-to-end tests.
//
// Runs a real `oidc-provider` (see package.json for the pinned version) on 127.0.0.1 with an
// ephemeral port. Protocol with the test harness:
//
//   * Once listening, prints exactly one line to stdout:
//       {"issuer":"http://127.0.0.1:PORT","port":PORT}
//     Nothing else is ever written to stdout (all logging goes to stderr).
//   * Exits when stdin reaches EOF (the test holds the child's stdin) or on SIGTERM/SIGINT.
//
// Endpoints (besides the provider's own; discovery at /.well-known/openid-configuration,
// token endpoint /token, JWKS /jwks):
//   * POST /__rotate  -> 200 {"kid":"key-b"}: from now on tokens are signed with key B (ES256) and
//                        the JWKS lists only key B. The issuer stays the same. Idempotent.
//   * GET  /__stats   -> 200 {"jwks_fetches":N}: number of GETs of the JWKS path so far.
//
// Client: client_id `tollgate-test`, client_secret `tollgate-test-secret`, client_credentials
// grant only, secret accepted via HTTP Basic (client_secret_basic) or in the form body
// (client_secret_post). `POST /token grant_type=client_credentials [scope=pets:read]` returns a JWT
// access token (typ at+jwt) with aud `urn:tollgate:petstore` (the default resource). Any other
// `resource=urn:tollgate:<name>` yields a token with that audience (for wrong-audience tests).

import * as crypto from 'node:crypto';
import * as http from 'node:http';

// oidc-provider prints its notices with console.info (stdout). stdout is reserved for the one
// ready line, so route every console method to stderr before the library is loaded.
for (const method of ['log', 'info', 'debug']) {
  console[method] = (...args) => console.error(...args);
}

const { default: Provider, errors } = await import('oidc-provider');

const HOST = '127.0.0.1';
const CLIENT_ID = 'tollgate-test';
const CLIENT_SECRET = 'tollgate-test-secret';
const DEFAULT_RESOURCE = 'urn:tollgate:petstore';
const RESOURCE_SCOPE = 'pets:read pets:write';
const ACCESS_TOKEN_TTL = 3600;
const JWKS_PATH = '/jwks';
const TOKEN_PATH = '/token';

function signingJwk(kid, alg, type, options) {
  const { privateKey } = crypto.generateKeyPairSync(type, options);
  return { ...privateKey.export({ format: 'jwk' }), kid, alg, use: 'sig' };
}

const keyA = signingJwk('key-a', 'RS256', 'rsa', { modulusLength: 2048 });
const keyB = signingJwk('key-b', 'ES256', 'ec', { namedCurve: 'P-256' });

// A small in-memory adapter; equivalent to the built-in one, but using our own keeps the provider
// from warning about its development-only adapter on every start.
const stores = new Map();
class MapAdapter {
  constructor(name) {
    if (!stores.has(name)) stores.set(name, new Map());
    this.store = stores.get(name);
  }

  async upsert(id, payload, expiresIn) {
    const expiresAt = expiresIn ? Date.now() + expiresIn * 1000 : Infinity;
    this.store.set(id, { payload, expiresAt });
  }

  async find(id) {
    const entry = this.store.get(id);
    if (!entry) return undefined;
    if (entry.expiresAt <= Date.now()) {
      this.store.delete(id);
      return undefined;
    }
    return entry.payload;
  }

  async findByUid(uid) {
    for (const [id, { payload }] of this.store) {
      if (payload.uid === uid) return this.find(id);
    }
    return undefined;
  }

  async findByUserCode(userCode) {
    for (const [id, { payload }] of this.store) {
      if (payload.userCode === userCode) return this.find(id);
    }
    return undefined;
  }

  async consume(id) {
    const entry = this.store.get(id);
    if (entry) entry.payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    this.store.delete(id);
  }

  async revokeByGrantId(grantId) {
    for (const [id, { payload }] of this.store) {
      if (payload.grantId === grantId) this.store.delete(id);
    }
  }
}

function buildProvider(issuer, jwk) {
  return new Provider(issuer, {
    adapter: MapAdapter,
    clients: [
      {
        client_id: CLIENT_ID,
        client_secret: CLIENT_SECRET,
        grant_types: ['client_credentials'],
        response_types: [],
        redirect_uris: [],
        // A client registered for client_secret_basic may also send the secret in the body.
        token_endpoint_auth_method: 'client_secret_basic',
        id_token_signed_response_alg: jwk.alg,
      },
    ],
    clientDefaults: { id_token_signed_response_alg: jwk.alg },
    jwks: { keys: [jwk] },
    cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
    routes: { jwks: JWKS_PATH, token: TOKEN_PATH },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => DEFAULT_RESOURCE,
        getResourceServerInfo: async (ctx, resourceIndicator) => {
          if (resourceIndicator !== DEFAULT_RESOURCE && !resourceIndicator.startsWith('urn:tollgate:')) {
            throw new errors.InvalidTarget();
          }
          return {
            scope: RESOURCE_SCOPE,
            audience: resourceIndicator,
            accessTokenFormat: 'jwt',
            accessTokenTTL: ACCESS_TOKEN_TTL,
            jwt: { sign: { alg: jwk.alg } },
          };
        },
      },
    },
    ttl: {
      ClientCredentials: (ctx, token) => token.resourceServer?.accessTokenTTL ?? ACCESS_TOKEN_TTL,
    },
  });
}

function sendJson(res, status, body) {
  const payload = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(payload),
    'cache-control': 'no-store',
  });
  res.end(payload);
}

let activeKid = 'key-a';
let jwksFetches = 0;
let handlers = null; // { 'key-a': callback, 'key-b': callback }, set once the issuer is known

const server = http.createServer((req, res) => {
  const path = new URL(req.url, 'http://placeholder').pathname;

  if (path === '/__rotate') {
    if (req.method !== 'POST') return sendJson(res, 405, { error: 'method not allowed' });
    activeKid = 'key-b';
    return sendJson(res, 200, { kid: activeKid });
  }
  if (path === '/__stats') {
    if (req.method !== 'GET') return sendJson(res, 405, { error: 'method not allowed' });
    return sendJson(res, 200, { jwks_fetches: jwksFetches });
  }
  if (!handlers) return sendJson(res, 503, { error: 'starting' });

  if (req.method === 'GET' && path === JWKS_PATH) jwksFetches += 1;
  return handlers[activeKid](req, res);
});

server.on('error', (err) => {
  console.error('oidc test provider: server error:', err);
  process.exit(1);
});

function shutdown() {
  server.close();
  server.closeAllConnections?.();
  process.exit(0);
}

process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
process.stdin.on('end', shutdown);
process.stdin.on('close', shutdown);
process.stdin.on('error', shutdown);
process.stdin.resume();

server.listen(0, HOST, () => {
  const { port } = server.address();
  const issuer = `http://${HOST}:${port}`;
  handlers = {
    'key-a': buildProvider(issuer, keyA).callback(),
    'key-b': buildProvider(issuer, keyB).callback(),
  };
  process.stdout.write(`${JSON.stringify({ issuer, port })}\n`);
});
