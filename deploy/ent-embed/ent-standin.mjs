// STAND-IN FOR THE ENT — NOT FOR PRODUCTION.
//
// This little server plays the part of an ENT (espace numérique de travail) so that the
// floating chat window can be tried and tested without one: it serves a portal page that
// embeds Causette's window (Converse.js, overlayed), pretends that a user is signed in
// (`/login?user=lea.martin&name=Léa Martin` sets cookies, nothing is checked), and signs short-lived sign-on
// tokens for that user, which the window presents to Causette as its SASL PLAIN password.
//
// A real ENT does the same three things with its own session and its own key: it signs a
// token (JWT: sub = the directory user id, iss, aud, iat, exp) for the signed-in user only,
// it serves that token to its own page, and it adds the script tag. See the README's
// "ENT integration".
//
// Settings (environment):
//   PORT            where this stand-in listens (default 8080; 0 picks one)
//   CAUSETTE_HTTP   Causette's HTTP base URL (default http://127.0.0.1:5280)
//   XMPP_DOMAIN     the XMPP domain (default localhost)
//   TOKEN_SECRET    the HS256 secret shared with Causette's [auth.token] (default: the
//                   public demo secret of deploy/ent-embed/causette.toml)
//   TOKEN_ISSUER    default https://ent.example.fr
//   TOKEN_AUDIENCE  default causette

import { createHmac } from 'node:crypto';
import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { extname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = fileURLToPath(new URL('.', import.meta.url));
const dist = join(here, 'node_modules', 'converse.js', 'dist');
const settings = {
    port: Number(process.env.PORT ?? 8080),
    causette: (process.env.CAUSETTE_HTTP ?? 'http://127.0.0.1:5280').replace(/\/$/, ''),
    domain: process.env.XMPP_DOMAIN ?? 'localhost',
    secret: process.env.TOKEN_SECRET ?? 'causette-ent-standin-demo-secret-not-for-production',
    issuer: process.env.TOKEN_ISSUER ?? 'https://ent.example.fr',
    audience: process.env.TOKEN_AUDIENCE ?? 'causette',
};
if (!process.env.TOKEN_SECRET) {
    console.warn('TOKEN_SECRET not set: signing with the public demo secret of causette.toml');
}

const base64url = (data) => Buffer.from(data).toString('base64url');

/** An HS256 JWT for `user`, valid five minutes. */
function signToken(user) {
    const now = Math.floor(Date.now() / 1000);
    const header = base64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
    const claims = base64url(JSON.stringify({
        sub: user, iss: settings.issuer, aud: settings.audience, iat: now, exp: now + 300,
    }));
    const signature = createHmac('sha256', settings.secret).update(`${header}.${claims}`).digest('base64url');
    return `${header}.${claims}.${signature}`;
}

function signedInUser(request) {
    const cookie = request.headers.cookie ?? '';
    const match = /(?:^|;\s*)ent_user=([a-z0-9._-]+)/i.exec(cookie);
    return match ? match[1] : null;
}

/** The signed-in user's display name, as the ENT knows it ('' when it was not given). */
function signedInName(request) {
    const match = /(?:^|;\s*)ent_name=([^;]*)/.exec(request.headers.cookie ?? '');
    try {
        return match ? decodeURIComponent(match[1]).slice(0, 100) : '';
    } catch {
        return '';
    }
}

const types = {
    '.js': 'text/javascript', '.css': 'text/css', '.json': 'application/json',
    '.svg': 'image/svg+xml', '.png': 'image/png', '.woff': 'font/woff', '.woff2': 'font/woff2',
    '.ttf': 'font/ttf', '.mp3': 'audio/mpeg', '.ogg': 'audio/ogg', '.html': 'text/html; charset=utf-8',
};

async function page(response, user, name, transport) {
    const template = await readFile(join(here, 'index.html'), 'utf8');
    // `?transport=bosh` leaves WebSocket out, as behind a proxy that cannot upgrade.
    const ws = transport === 'bosh' ? '' : settings.causette.replace(/^http/, 'ws') + '/xmpp-websocket';
    const html = template
        .replaceAll('{{USER}}', user)
        // A JavaScript string inside a <script>: JSON, with `<` escaped so that no name can
        // close the script element.
        .replaceAll('{{DISPLAY_NAME_JSON}}', JSON.stringify(name).replaceAll('<', '\\u003c'))
        .replaceAll('{{WEBSOCKET_URL}}', ws)
        .replaceAll('{{BOSH_URL}}', settings.causette + '/http-bind')
        .replaceAll('{{DOMAIN}}', settings.domain);
    response.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
    response.end(html);
}

const server = createServer(async (request, response) => {
    const url = new URL(request.url, 'http://stand-in');
    try {
        if (url.pathname === '/login') {
            // Stand-in only: anybody may "sign in" as anybody.
            const user = (url.searchParams.get('user') ?? '').replace(/[^a-z0-9._-]/gi, '');
            const name = encodeURIComponent((url.searchParams.get('name') ?? '').slice(0, 100));
            response.writeHead(302, {
                location: '/',
                'set-cookie': [
                    `ent_user=${user}; Path=/; HttpOnly; SameSite=Lax`,
                    `ent_name=${name}; Path=/; HttpOnly; SameSite=Lax`,
                ],
            });
            return response.end();
        }
        const user = signedInUser(request);
        if (url.pathname === '/api/chat-credentials') {
            if (!user) {
                response.writeHead(401, { 'content-type': 'application/json' });
                return response.end('{"error":"not signed in to the ENT"}');
            }
            response.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
            return response.end(JSON.stringify({ jid: `${user}@${settings.domain}`, password: signToken(user) }));
        }
        if (url.pathname === '/' ) {
            if (!user) {
                // A user of the demo directory (admin.demo_directory).
                response.writeHead(302, { location: '/login?user=lea.martin&name=L%C3%A9a%20Martin' });
                return response.end();
            }
            return await page(response, user, signedInName(request), url.searchParams.get('transport'));
        }
        if (url.pathname.startsWith('/converse/')) {
            const path = normalize(url.pathname.slice('/converse/'.length));
            if (path.startsWith('..')) throw new Error('outside');
            const body = await readFile(join(dist, path));
            response.writeHead(200, { 'content-type': types[extname(path)] ?? 'application/octet-stream' });
            return response.end(body);
        }
        response.writeHead(404, { 'content-type': 'text/plain' });
        response.end('not found');
    } catch {
        response.writeHead(404, { 'content-type': 'text/plain' });
        response.end('not found');
    }
});

server.listen(settings.port, '127.0.0.1', () => {
    console.log(`ENT stand-in listening on http://127.0.0.1:${server.address().port}`);
});
