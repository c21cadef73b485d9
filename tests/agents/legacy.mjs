// An MCP agent for the tests on the official TypeScript SDK (npm
// `@modelcontextprotocol/sdk` 1.32): the older wire, revision 2025-11-25
// (`initialize`, then `Mcp-Session-Id` on every request), as most agents in
// the field speak it today. agent.py covers the Python SDK and 2026-07-28.
//
// Usage (every answer is one JSON line on stdout; a failure is a message on
// stderr and exit status 1):
//   node legacy.mjs tools     URL [TOKEN]            -> {"protocol": ..., "tools": [name, ...]}
//   node legacy.mjs call      URL TOOL ARGS [TOKEN]  -> {"is_error": bool, "structured": {...}},
//                                                       or {"exception": "..."} when the request
//                                                       itself failed (an HTTP 401/403, a
//                                                       JSON-RPC error), as agent.py does
//   node legacy.mjs resources URL [TOKEN]            -> {"resources": [uri, ...], "templates": [uriTemplate, ...]}
//   node legacy.mjs read      URL URI [TOKEN]        -> {"contents": [...]}, or
//                                                       {"error": {"code", "message", "data"}}
//   node legacy.mjs subscribe URL URI [TOKEN]        -> {"subscribed": URI}, then one
//                                                       {"updated": uri} per
//                                                       notifications/resources/updated, forever
//
// TOKEN, when given, goes as `Authorization: Bearer TOKEN` on every request
// (the POSTs and the GET stream that carries notifications).

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { McpError, ResourceUpdatedNotificationSchema } from '@modelcontextprotocol/sdk/types.js';

function out(value) {
  process.stdout.write(JSON.stringify(value) + '\n');
}

async function connect(url, token) {
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  const transport = new StreamableHTTPClientTransport(new URL(url), {
    requestInit: { headers },
  });
  const client = new Client({ name: 'switchyard-tests-legacy', version: '1.0.0' });
  await client.connect(transport);
  return { client, transport };
}

/** Ends the session (DELETE /mcp with its Mcp-Session-Id), then the client. */
async function disconnect({ client, transport }) {
  await transport.terminateSession().catch(() => {});
  await client.close();
}

/** Every page of a paginated list. */
async function all(list, key) {
  const items = [];
  let cursor;
  do {
    const page = await list(cursor === undefined ? undefined : { cursor });
    items.push(...(page[key] ?? []));
    cursor = page.nextCursor;
  } while (cursor);
  return items;
}

async function tools(url, token) {
  const session = await connect(url, token);
  try {
    const listed = await all((params) => session.client.listTools(params), 'tools');
    out({
      protocol: session.transport.protocolVersion,
      tools: listed.map((tool) => tool.name),
    });
  } finally {
    await disconnect(session);
  }
}

/** An error as one line: its class, the HTTP status (or JSON-RPC code), its message. */
function describe(err) {
  const code = err?.code === undefined ? '' : ` ${err.code}`;
  return `${err?.name ?? 'Error'}${code}: ${err?.message ?? err}`;
}

async function call(url, tool, args, token) {
  let session;
  try {
    session = await connect(url, token);
    const result = await session.client.callTool({ name: tool, arguments: JSON.parse(args) });
    out({ is_error: Boolean(result.isError), structured: result.structuredContent ?? null });
  } catch (err) {
    out({ exception: describe(err) });
  } finally {
    if (session) await disconnect(session);
  }
}

async function resources(url, token) {
  const session = await connect(url, token);
  try {
    const listed = await all((params) => session.client.listResources(params), 'resources');
    const templates = await all(
      (params) => session.client.listResourceTemplates(params),
      'resourceTemplates',
    );
    out({
      resources: listed.map((resource) => resource.uri),
      templates: templates.map((template) => template.uriTemplate),
    });
  } finally {
    await disconnect(session);
  }
}

async function read(url, uri, token) {
  const session = await connect(url, token);
  try {
    let result;
    try {
      result = await session.client.readResource({ uri });
    } catch (err) {
      if (!(err instanceof McpError)) throw err;
      out({ error: { code: err.code, message: err.message, data: err.data ?? null } });
      return;
    }
    out({ contents: result.contents });
  } finally {
    await disconnect(session);
  }
}

async function subscribe(url, uri, token) {
  const session = await connect(url, token);
  session.client.setNotificationHandler(ResourceUpdatedNotificationSchema, (notification) => {
    out({ updated: notification.params.uri });
  });
  session.client.onerror = (err) => process.stderr.write(`legacy.mjs: ${err?.message ?? err}\n`);
  await session.client.subscribeResource({ uri });
  out({ subscribed: uri });
  // Updates come on the session's GET stream (the SDK opens it after
  // initialize and reconnects it); wait for them until killed.
  setInterval(() => {}, 1 << 30);
  await new Promise(() => {});
}

const commands = {
  tools: [tools, 1],
  call: [call, 3],
  resources: [resources, 1],
  read: [read, 2],
  subscribe: [subscribe, 2],
};

const [command, ...rest] = process.argv.slice(2);
const entry = commands[command];
if (!entry || rest.length < entry[1] || rest.length > entry[1] + 1) {
  process.stderr.write(
    'usage: node legacy.mjs tools URL [TOKEN] | call URL TOOL ARGS_JSON [TOKEN] | ' +
      'resources URL [TOKEN] | read URL URI [TOKEN] | subscribe URL URI [TOKEN]\n',
  );
  process.exit(2);
}
try {
  await entry[0](...rest);
  process.exit(0);
} catch (err) {
  process.stderr.write(`legacy.mjs ${command}: ${err?.stack ?? err}\n`);
  process.exit(1);
}
