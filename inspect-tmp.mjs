import onnxProto from 'onnx-proto';
import { readFileSync } from 'node:fs';
const { onnx } = onnxProto;
for (const f of process.argv.slice(2)) {
const m = onnx.ModelProto.decode(readFileSync(f));
console.log(f, 'ir', m.irVersion.toString(), 'opset', JSON.stringify(m.opsetImport), 'producer', m.producerName, m.producerVersion, 'meta', JSON.stringify(m.metadataProps));
const g = m.graph;
console.log('graph', g.name, 'inputs', JSON.stringify(g.input.map(i=>[i.name, i.type?.tensorType?.shape?.dim])), 'outputs', JSON.stringify(g.output.map(i=>i.name)));
console.log('inits', g.initializer.length, g.initializer.slice(0,3).map(t=>[t.name,t.dims.map(Number),t.dataType,t.rawData?.length, t.floatData.length]));
const ops = {};
for (const n of g.node) ops[n.opType]=(ops[n.opType]||0)+1;
console.log(ops);
for (const n of g.node.slice(0, 60)) console.log(n.name, n.opType, n.input, n.output, n.attribute.map(a=>a.name+'='+JSON.stringify(a.ints?.length?a.ints.map(Number):a.i!=null&&a.type===2?Number(a.i):a.f)).join(' '));
}
