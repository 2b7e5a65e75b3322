#!/bin/sh
# Train PIR-AT's Segmenter-ViT-S on ade20k with PGD-AT (5 steps at 4/255; PIR-AT's AdamW recipe and robust ImageNet init are not
# here yet, docs/pir_at.md): sh tool_train/ade20k/segmenter_vit_s_train_pirat.sh [key value ...]
exec sh tool_train/train.sh ade20k segmenter_vit_s_pirat config/ade20k/ade20k_segmenter_vit_s_pirat.yaml "$@"
