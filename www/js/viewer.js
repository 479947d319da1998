// The picture viewer: a modal <dialog> (keyboard: Esc closes, focus stays inside) showing an
// event's snapshot or a live snapshot large, with a link to save it.

import { $ } from './dom.js';

const dialog = $('viewer');
const image = $('viewer-img');
let blobUrl = null;

/** `region`: a motion event's box, `[x, y, w, h]` fractions of the picture, drawn over it. */
export function openViewer(src, caption, filename, region = null) {
  releaseBlob();
  showRegion(region);
  if (src.startsWith('blob:')) blobUrl = src;
  image.src = src;
  image.alt = caption;
  $('viewer-caption').textContent = caption;
  const save = $('viewer-save');
  save.href = src;
  save.download = filename;
  if (!dialog.open) dialog.showModal();
  $('viewer-close').focus();
}

function showRegion(region) {
  const box = $('viewer-box');
  const valid = Array.isArray(region) && region.length === 4 &&
    region.every((v) => Number.isFinite(v) && v >= 0 && v <= 1);
  box.hidden = !valid;
  if (!valid) return;
  const [x, y, w, h] = region.map((v) => `${(v * 100).toFixed(2)}%`);
  Object.assign(box.style, { left: x, top: y, width: w, height: h });
}

function releaseBlob() {
  if (blobUrl) URL.revokeObjectURL(blobUrl);
  blobUrl = null;
}

$('viewer-close').addEventListener('click', () => dialog.close());
// A click on the backdrop (outside the dialog's box) closes it too.
dialog.addEventListener('click', (e) => {
  if (e.target === dialog) {
    const box = dialog.getBoundingClientRect();
    const inside = e.clientX >= box.left && e.clientX <= box.right && e.clientY >= box.top && e.clientY <= box.bottom;
    if (!inside) dialog.close();
  }
});
dialog.addEventListener('close', () => {
  image.removeAttribute('src');
  releaseBlob();
});
