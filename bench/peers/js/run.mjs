// js-libp2p GossipSub nodes for bench/peers: every node in this Node.js process.
//
// Run by bench/peers/run.py as `node bench/peers/js/run.mjs --picks JSON` after
// `npm ci` in this folder (versions pinned in package.json and package-lock.json).
// Node i listens on 127.0.0.1 (every node shares the address) and dials the nodes
// --picks names; every node subscribes to one topic and node 0 publishes. It speaks
// JSON lines: {"ready": ...} once the meshes are grafted, then for each command
// {"rate", "count", "first"} on stdin one {"run": ...} (see run.py's
// Child), until stdin closes.
//
// The GossipSub parameters are the ones every implementation in the comparison
// gets: D = 6 (4 to 12), a 1 s heartbeat, strict signing, Noise and yamux,
// publishing to mesh peers only, scoring that cannot demote a peer, and no
// per-address connection limits.

import './node20.mjs'
import diagnostics from 'node:diagnostics_channel'
import { readFileSync } from 'node:fs'
import { createInterface } from 'node:readline'
import { parseArgs } from 'node:util'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { gossipsub } from '@libp2p/gossipsub'
import { identify } from '@libp2p/identify'
import { tcp } from '@libp2p/tcp'
import { createLibp2p } from 'libp2p'

const TOPIC = 'bench'
const TEXT_SIZE = 1024
const NEVER = -1e12 // a score threshold no peer reaches: with every weight 0, scores stay 0

const GOSSIPSUB = {
  D: 6,
  Dlo: 4,
  Dhi: 12,
  heartbeatInterval: 1000,
  globalSignaturePolicy: 'StrictSign',
  floodPublish: false, // publish to mesh peers only (the library's default floods)
  protocols: ['/meshsub/1.2.0', '/meshsub/1.1.0', '/meshsub/1.0.0'],
  scoreParams: {
    topics: {},
    appSpecificWeight: 0,
    IPColocationFactorWeight: 0, // every node shares 127.0.0.1
    behaviourPenaltyWeight: 0
  },
  scoreThresholds: {
    gossipThreshold: NEVER,
    publishThreshold: NEVER,
    graylistThreshold: NEVER,
    acceptPXThreshold: 0,
    opportunisticGraftThreshold: 0
  }
}

const CONNECTIONS = {
  // No per-address limits: every node dials from and listens on 127.0.0.1.
  allow: ['/ip4/127.0.0.1/ipcidr/8'],
  inboundConnectionThreshold: Number.MAX_SAFE_INTEGER,
  maxIncomingPendingConnections: 10_000,
  maxConnections: 10_000
}

/** The k-th message: 1 KiB of ASCII, numbered at bytes 15 to 23 (bench/mesh.py's text_of). */
function textOf (k) {
  const text = `bench bulletin ${String(k).padStart(8, '0')} ` + 'lorem ipsum dolor sit amet '.repeat(40)
  return new TextEncoder().encode(text.slice(0, TEXT_SIZE))
}

const decoder = new TextDecoder()
const now = () => performance.now() / 1000
const sleep = (s) => new Promise((resolve) => setTimeout(resolve, Math.max(0, s * 1000)))
const say = (doc) => process.stdout.write(JSON.stringify(doc) + '\n')

/** Bytes written to every TCP socket of this process (Noise and yamux framing included). */
const sockets = new Set()
diagnostics.subscribe('net.client.socket', ({ socket }) => sockets.add(socket))
diagnostics.subscribe('net.server.socket', ({ socket }) => sockets.add(socket))
let closedBytes = 0
function wireBytes () {
  let total = closedBytes
  for (const socket of sockets) {
    if (socket.destroyed) {
      closedBytes += socket.bytesWritten
      sockets.delete(socket)
    }
    total += socket.bytesWritten
  }
  return total
}

async function main () {
  const { values } = parseArgs({
    options: {
      picks: { type: 'string' },
      drain: { type: 'string', default: '10' },
      'setup-timeout': { type: 'string', default: '60' },
      lifetime: { type: 'string', default: '900' }
    }
  })
  setTimeout(() => process.exit(3), Number(values.lifetime) * 1000).unref()
  const picks = JSON.parse(values.picks)
  const n = picks.length
  const rss0 = process.memoryUsage().rss
  const arrived = Array.from({ length: n }, () => new Map())
  const window = { first: 0, end: 0, held: 0 } // the run's messages, and their deliveries so far
  let changed = () => {}
  const nodes = []
  for (let i = 0; i < n; i++) {
    const node = await createLibp2p({
      addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
      transports: [tcp()],
      connectionEncrypters: [noise()],
      streamMuxers: [yamux()],
      connectionManager: CONNECTIONS,
      services: { identify: identify(), pubsub: gossipsub(GOSSIPSUB) }
    })
    node.services.pubsub.subscribe(TOPIC)
    if (i > 0) {
      node.services.pubsub.addEventListener('message', (event) => {
        const k = Number(decoder.decode(event.detail.data.subarray(15, 23)))
        if (arrived[i].has(k)) return
        arrived[i].set(k, now())
        if (k >= window.first && k < window.end) {
          window.held++
          changed()
        }
      })
    }
    nodes.push(node)
  }
  const degree = new Array(n).fill(0)
  for (let i = 0; i < n; i++) {
    for (const j of picks[i]) {
      await nodes[i].dial(nodes[j].getMultiaddrs()[0])
      degree[i]++
      degree[j]++
    }
  }
  const setupBy = now() + Number(values['setup-timeout'])
  while (nodes.some((node, i) => node.services.pubsub.getSubscribers(TOPIC).length < degree[i])) {
    if (now() > setupBy) throw new Error('the subscriptions were not all seen in time')
    await sleep(0.05)
  }
  await sleep(2 * GOSSIPSUB.heartbeatInterval / 1000) // (the meshes graft)
  const version = JSON.parse(
    readFileSync(new URL('node_modules/libp2p/package.json', import.meta.url))
  ).version
  say({ ready: { impl: 'js-libp2p', version } })

  for await (const line of createInterface({ input: process.stdin })) {
    if (!line.trim()) continue
    const cmd = JSON.parse(line)
    if (cmd.rate === undefined) break // ({"cmd": "quit"})
    const rate = Number(cmd.rate)
    const count = Number(cmd.count)
    const first = Number(cmd.first)
    for (const m of arrived) m.clear()
    Object.assign(window, { first, end: first + count, held: 0 })
    const posted = []
    const cpu0 = process.cpuUsage()
    const wire0 = wireBytes()
    const start = now() + 0.05
    for (let k = 0; k < count; k++) {
      await sleep(start + k / rate - now())
      posted.push(now())
      await nodes[0].services.pubsub.publish(TOPIC, textOf(first + k))
    }
    const drainBy = now() + Number(values.drain)
    while (window.held < count * (n - 1) && now() < drainBy) {
      await new Promise((resolve) => {
        changed = resolve
        setTimeout(resolve, Math.max(0, (drainBy - now()) * 1000))
      })
      changed = () => {}
    }
    const cpu = process.cpuUsage(cpu0)
    const arrivals = []
    arrived.forEach((m, i) => {
      for (const [k, t] of m) if (k >= first && k < first + count) arrivals.push([i, k - first, t])
    })
    say({
      run: {
        posted,
        arrivals,
        cpu_s: (cpu.user + cpu.system) / 1e6,
        wire_bytes: wireBytes() - wire0,
        rss_per_node: (process.memoryUsage().rss - rss0) / n,
        anomalies: {}
      }
    })
  }
  await Promise.all(nodes.map((node) => node.stop()))
  process.exit(0)
}

main().catch((error) => {
  say({ error: String(error?.stack ?? error) })
  process.exit(1)
})
