"""The Pet pipeline's joint image/saliency transform, checked at the level of labels.

An Oxford-IIIT Pet folder with trimaps (written in the real format) goes through the Pet
training pipeline (resize 256, random-resized crop 224, flip). The trimap's object mask takes
the path a cached saliency map takes (``JointTransform``: the crop is composed into one
resample); the reference crops the same mask *directly*, with torchvision's own joint
transform of an image and a ``tv_tensors.Mask`` under the same random draws. Mixed on the
crops, the label error of each mixer against the truth from the transformed maps must match
the error against the truth from the directly cropped masks.
"""

import numpy as np
import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from saliencymixplus.label_noise import label_errors, true_label_weights
from saliencymixplus.mix import CutMix, SaliencyMixPlus
from saliencymixplus.rawdata import load_oxford_pet, read_pet_trimap, trimap_object_mask
from saliencymixplus.transforms import train_transform

from fixtures_data import make_pet_folder, write_pet_trimaps

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pet_with_trimaps(tmp_path_factory):
    pet = make_pet_folder(tmp_path_factory.mktemp("pet_trimaps"), n_train=12, n_test=2, seed=3)
    return pet, write_pet_trimaps(pet, seed=4)


def _crops(pet_dir, rounds=4, stored=None):
    """``(maps, masks, labels, images_equal)``: the trimap masks through JointTransform and,
    with the same draws, through torchvision's joint transform (nearest neighbour). ``stored``
    ``(h, w)``: the maps are first resized to the resolution a cache stores (Pet: 256x256)."""
    import cv2

    raw = load_oxford_pet(pet_dir, "train")
    tf = train_transform("oxford_pet")
    ref = v2.Compose([v2.Resize((256, 256), antialias=True), v2.RandomResizedCrop(224, antialias=True),
                      v2.RandomHorizontalFlip()])  # the published Pet pipeline, written out here
    maps, masks, labels, equal = [], [], [], []
    for r in range(rounds):
        for i in range(len(raw)):
            image = raw.image(i)
            obj = trimap_object_mask(read_pet_trimap(raw, i))
            stored_map = obj if stored is None else cv2.resize(obj, stored[::-1], interpolation=cv2.INTER_LINEAR)
            torch.manual_seed(100 * r + i)
            x, s = tf(image, stored_map)
            torch.manual_seed(100 * r + i)
            img_b, m_b = ref(tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1)),
                             tv_tensors.Mask(torch.from_numpy(obj)))
            torch.manual_seed(100 * r + i)
            img_a, _ = tf.apply_image(image)
            equal.append(torch.equal(img_a, img_b.as_subclass(torch.Tensor)))
            maps.append(s.float())
            masks.append(m_b.as_subclass(torch.Tensor).float())
            labels.append(int(raw.labels[i]))
    return torch.stack(maps), torch.stack(masks), torch.tensor(labels), equal


def test_trimaps_read_in_the_published_format(pet_with_trimaps):
    pet, trimaps = pet_with_trimaps
    raw = load_oxford_pet(pet["data_dir"], "train")
    name = raw.ids[0].split("/")[-1][:-4]
    t = read_pet_trimap(raw, 0)
    np.testing.assert_array_equal(t, trimaps[name])
    m = trimap_object_mask(t)
    assert set(np.unique(m).tolist()) == {0.0, 0.5, 1.0}
    np.testing.assert_array_equal(m == 1.0, t == 1)
    np.testing.assert_array_equal(m == 0.5, t == 3)


def test_trimap_errors_name_the_file(pet_with_trimaps, tmp_path):
    import cv2

    pet, _ = pet_with_trimaps
    raw = load_oxford_pet(pet["data_dir"], "train")
    path = pet["root"] / "annotations" / "trimaps" / f"{raw.ids[1].split('/')[-1][:-4]}.png"
    keep = path.read_bytes()
    try:
        t = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        t[0, 0] = 7
        cv2.imwrite(str(path), t)
        with pytest.raises(ValueError, match=r"must hold only 1 \(pet\), 2 \(background\), 3 \(border\), got \[7\]"):
            read_pet_trimap(raw, 1)
        path.unlink()
        with pytest.raises(FileNotFoundError, match=f"trimap {path} of image .* is missing"):
            read_pet_trimap(raw, 1)
    finally:
        path.write_bytes(keep)


@pytest.mark.parametrize("stored", [None, (256, 256)], ids=["raw-size maps", "256x256 maps as cached"])
def test_pet_crop_labels_match_the_directly_cropped_mask(pet_with_trimaps, stored):
    pet, _ = pet_with_trimaps
    maps, masks, labels, equal = _crops(pet["data_dir"], stored=stored)
    assert all(equal)  # the two paths drew the same crop and flip
    assert maps.shape == masks.shape == (48, 224, 224)
    # Same object, same place: the maps differ from the nearest-neighbour masks only at edges.
    edge = (maps - masks).abs().sum((1, 2)) / masks.sum((1, 2)).clamp_min(1)
    assert edge.max() < 0.15, edge
    n = len(labels)
    x = torch.zeros(n, 3, 224, 224)
    g = torch.Generator().manual_seed(0)
    checked = 0
    for mixer, uses_maps in ((SaliencyMixPlus(37, box="window"), True), (CutMix(37), False)):
        for _ in range(6):
            r = mixer.mix(x, labels, maps, generator=g) if uses_maps else mixer.mix(x, labels, generator=g)
            true_maps = true_label_weights(maps, r.perm, r.boxes)
            true_masks = true_label_weights(masks, r.perm, r.boxes)
            err_maps, err_masks = label_errors(r.lam, true_maps), label_errors(r.lam, true_masks)
            assert (err_maps.mean() - err_masks.mean()).abs() < 0.01
            assert (true_maps - true_masks).abs().max() < 0.05
            if uses_maps:  # the oracle saliency gives the true label of the transformed maps exactly
                assert err_maps.max() < 1e-6
            checked += n
    assert checked == 2 * 6 * 48


def test_a_map_that_misses_its_flip_gives_other_labels(pet_with_trimaps):
    """The check above has power: a map left unflipped where its image was flipped (the bug
    the joint transform exists to prevent) moves the true weights far more than its tolerance."""
    pet, _ = pet_with_trimaps
    maps, masks, labels, _ = _crops(pet["data_dir"], rounds=2)
    x = torch.zeros(len(labels), 3, 224, 224)
    r = SaliencyMixPlus(37, box="window").mix(x, labels, maps, generator=torch.Generator().manual_seed(1))
    wrong = true_label_weights(maps.flip(-1), r.perm, r.boxes)
    right = true_label_weights(masks, r.perm, r.boxes)
    assert (wrong - right).abs().max() > 0.2
