// libp2p 3.3's dependencies call Promise.withResolvers (ES2024), which Node.js has
// from version 22; on Node.js 20 this module defines it as the standard does.
// run.mjs imports it before anything else.
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function withResolvers () {
    let resolve, reject
    const promise = new this((res, rej) => {
      resolve = res
      reject = rej
    })
    return { promise, resolve, reject }
  }
}
