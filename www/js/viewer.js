// The picture viewer: a modal <dialog> (Esc closes, focus stays inside) showing an event's
// snapshot (a motion's box on it; or its clip) or a live snapshot large, with a save link.

import { $, isLocalPath } from './dom.js';

const dialog = $('viewer');
const image = $('viewer-img');
let blobUrl = null;

export function openViewer(src, caption, filename, clip, box) {
  releaseBlob();
  const b = $('viewer-box'); // [x, y, w, h]: fractions of the picture
  b.hidden = !(Array.isArray(box) && box.length === 4 && box.every((v) => v >= 0 && v <= 1));
  ['left', 'top', 'width', 'height'].forEach((k, i) => { b.style[k] = `${box?.[i] * 100}%`; });
  if (src.startsWith('blob:')) blobUrl = src;
  const play = isLocalPath(clip);
  image.style.backgroundImage = play ? `url("${src}")` : '';
  image.src = play ? clip : src;
  image.alt = caption;
  $('viewer-caption').textContent = caption;
  const save = $('viewer-save');
  save.href = play ? `${clip}?download=1` : src;
  save.download = filename.replace('.jpg', play ? '.mkv' : '.jpg');
  save.textContent = `Save ${play ? 'clip' : 'picture'}`;
  if (!dialog.open) dialog.showModal();
  $('viewer-close').focus();
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
