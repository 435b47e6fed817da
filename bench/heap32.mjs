// The heap that firmware modules take once imported, on MicroPython's webassembly port: a
// 32-bit build (pointers, object headers and GC blocks of 16 bytes, as on an ESP32) of the same
// MicroPython as the unix port. Used by bench/device.py beside the same measure on the unix port.
//
//     node bench/heap32.mjs PACKAGE_DIR ROMFS_IMAGE device.boards,device.hal,...
//
// Prints one JSON line: {"port", "modules": {name: bytes}, "total", "qstr_bytes"}: the heap
// each import added, all of them together, and the interned names' share of that.
//
// This build (the PyScript variant) grows its heap instead of collecting in the middle of a call
// (its gc_collect only marks a collection as due, done when control is back in JavaScript), so
// every figure is read in a call of its own, after a call that asked for the collection.

import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [packageDir, imagePath, moduleList] = process.argv.slice(2);
const entry = join(packageDir, "micropython.mjs");
const { loadMicroPython } = await import(pathToFileURL(entry).href);
const romfs = new Uint8Array(readFileSync(imagePath)); // mounted at /rom, outside the GC heap
const printed = [];
const mp = await loadMicroPython({ heapsize: 4 << 20, romfs, stdout: (line) => printed.push(line) });
// The webassembly port has no sockets; device.mqtt imports the module at its top and uses it
// only once connected, which never happens here. An empty module lets the import run.
mp.registerJsModule("socket", {});

function collected() {
  mp.runPython("import gc\ngc.collect()"); // due, done as the call returns
  mp.runPython("print(gc.mem_alloc())");
  return parseInt(printed.pop(), 10);
}

function qstrBytes() {
  mp.runPython("import micropython\nmicropython.qstr_info()");
  const pool = printed.filter((line) => line.startsWith("qstr pool:")).pop();
  printed.length = 0;
  return parseInt(pool.split("n_total_bytes=")[1], 10);
}

mp.runPython("import asyncio"); // before the measure: this port's asyncio is its own
const modules = {};
const qstrStart = qstrBytes();
const start = collected();
for (const name of moduleList.split(",")) {
  const before = collected();
  mp.runPython(`import ${name}`);
  modules[name] = collected() - before;
}
const total = collected() - start;
const qstrs = qstrBytes() - qstrStart;
mp.runPython("import sys\nprint(sys.implementation._machine, sys.version.split(';')[1].strip())");
console.log(JSON.stringify({ port: printed.pop(), modules, total, qstr_bytes: qstrs }));
