#!/usr/bin/env bash
# Download and extract the Oxford-IIIT Pet data set (37 breeds, ~800 MB) into DIR (default: data/oxford_pet).
#
#   tools/get_oxford_pet.sh [DIR]
#
# Result: DIR/images/*.jpg and DIR/annotations/{trainval,test,list}.txt, the layout that
# saliencymixplus.data.load_split("oxford_pet", DIR, ...) reads (train = trainval.txt).
set -euo pipefail

DIR="${1:-data/oxford_pet}"
BASE="https://www.robots.ox.ac.uk/~vgg/data/pets/data"
mkdir -p "$DIR"
cd "$DIR"

fetch() {
    if command -v curl >/dev/null 2>&1; then
        curl -fL --retry 3 -o "$1.part" "$BASE/$1"
    elif command -v wget >/dev/null 2>&1; then
        wget -O "$1.part" "$BASE/$1"
    else
        echo "error: need curl or wget to download $BASE/$1" >&2
        exit 1
    fi
    mv "$1.part" "$1"
}

for f in images.tar.gz annotations.tar.gz; do
    if [ ! -f "$f" ]; then
        echo "downloading $BASE/$f"
        fetch "$f"
    fi
    echo "extracting $f"
    tar xzf "$f"
done

test -f annotations/trainval.txt && test -f annotations/test.txt && test -d images || {
    echo "error: extraction did not produce images/ and annotations/{trainval,test}.txt in $PWD" >&2
    exit 1
}
echo "Oxford-IIIT Pet is in $PWD ($(ls images | grep -c '\.jpg$') images); you may delete the .tar.gz files"
